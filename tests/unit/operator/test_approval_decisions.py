"""Manual approval (`tailor.assess.approval.assess`) as a pure function: annotations, status
and the promote Job in, the new status, Events and whether to start the Job out."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tailor.assess import approval
from tailor.assess.conditions import find
from tailor.assess.trainingjob import assess as lifecycle_assess
from tailor_contract import constants as c
from tailor_contract.trainer_api import EXIT_PERMANENT, TerminationSummary
from tailor_contract.trainingjob import TrainingJobSpec

NOW, LATER, LATEST = "2026-01-01T00:10:00Z", "2026-01-01T00:20:00Z", "2026-01-01T00:30:00Z"
UID, RUN = "abcdef0123", "run-abcdef01"
APPROVE, REJECT = c.ANNOTATION_APPROVE, c.ANNOTATION_REJECT
JUDGED = "accuracy 0.9100 beats generic 0.8000 (p=0.002); promotion policy is Manual"


def condition(kind: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:05:00Z", "observedGeneration": 1}


def finished(verdict: str = c.REASON_AWAITING_APPROVAL, reason: str | None = None,
             succeeded: bool = True) -> dict[str, Any]:
    """The status of a finished run with the given verdict."""
    reason = reason or verdict
    promoted = "True" if verdict == c.REASON_PROMOTED else "False"
    return {"runId": RUN, "phase": "Succeeded" if succeeded else "Failed",
            "conditions": [
                condition(c.CONDITION_SUCCEEDED, "True" if succeeded else "False", "Completed"),
                condition(c.CONDITION_FAILED, "False" if succeeded else "True", "Completed"),
                condition(c.CONDITION_PROMOTED, promoted, reason, JUDGED)],
            "promotion": {"verdict": verdict, "reason": reason, "message": JUDGED,
                          "time": "2026-01-01T00:05:00Z"}}


def promote_job(state: str = "", owner: str = UID, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "j-promote", "uid": "p1",
                            "ownerReferences": [{"uid": owner, "controller": True}]}
    if deleting:
        meta["deletionTimestamp"] = NOW
    conditions = [{"type": state, "status": "True", "reason": "BackoffLimitExceeded",
                   "message": "Job has reached the specified backoff limit"}] if state else []
    return {"metadata": meta, "status": {"conditions": conditions}}


def pod(code: int, message: str, finished_at: str = NOW) -> dict[str, Any]:
    return {"status": {"containerStatuses": [{"state": {"terminated": {
        "exitCode": code, "message": message, "finishedAt": finished_at}}}]}}


def run(status: dict[str, Any], annotations: dict[str, str] | None = None,
        job: dict[str, Any] | None = None, pods: list[dict[str, Any]] | None = None,
        now: str = NOW) -> approval.Outcome:
    return approval.assess("j", UID, status, annotations, job, pods, 1, now)


def promoted(status: dict[str, Any]) -> tuple[str, str, str]:
    found = find(status["conditions"], c.CONDITION_PROMOTED)
    assert found is not None
    return found["status"], found["reason"], found["message"]


def reasons(outcome: approval.Outcome) -> list[str]:
    return [e.reason for e in outcome.events]


def test_without_an_annotation_nothing_happens() -> None:
    status = finished()
    outcome = run(status)
    assert outcome.status == status and not outcome.promote and outcome.events == []


@pytest.mark.parametrize("annotations, why", [
    ({APPROVE: "run-99999999"}, "it names run run-99999999, but the run awaiting approval "
                                f"is {RUN}"),
    ({REJECT: "run-99999999"}, "it names run run-99999999"),
    ({APPROVE: "  "}, "it names run (empty)"),
    ({APPROVE: RUN, REJECT: RUN}, f"both {APPROVE} and {REJECT} name run {RUN}"),
])
def test_an_annotation_that_does_not_name_the_awaiting_run_alone_is_refused(
        annotations: dict[str, str], why: str) -> None:
    status = finished()
    outcome = run(status, annotations)
    assert not outcome.promote
    assert set(reasons(outcome)) == {c.REASON_APPROVAL_REFUSED}
    assert len(outcome.events) == len(annotations)
    assert all(e.type == "Warning" for e in outcome.events)
    assert why in outcome.events[0].message and "nothing was changed" in outcome.events[0].message
    # Nothing promoted, nothing recorded: the status is what it was.
    assert outcome.status == status and "approval" not in outcome.status["promotion"]


@pytest.mark.parametrize("status, why", [
    (finished(c.REASON_PROMOTED), "not awaiting approval (verdict Promoted, Promoted)"),
    (finished("Rejected", c.REASON_NOT_BETTER), "not awaiting approval (verdict Rejected, "
                                                "NotBetter)"),
    (finished("Rejected", c.REASON_REGRESSED), "(verdict Rejected, Regressed)"),
    (finished(c.REASON_NOT_APPLICABLE), "(verdict NotApplicable, NotApplicable)"),
    (finished(succeeded=False), f"run {RUN} failed and has no verdict to approve"),
])
def test_approving_or_rejecting_a_run_not_awaiting_approval_is_refused(
        status: dict[str, Any], why: str) -> None:
    for asked in ({APPROVE: RUN}, {REJECT: RUN}):
        outcome = run(status, asked)
        assert reasons(outcome) == [c.REASON_APPROVAL_REFUSED] and not outcome.promote
        assert why in outcome.events[0].message
        assert outcome.status == status


def test_approval_starts_one_promote_job_and_records_the_decision() -> None:
    outcome = run(finished(), {APPROVE: RUN})
    assert outcome.promote and reasons(outcome) == ["Promoting"]
    s = outcome.status
    assert s["promotion"]["verdict"] == c.REASON_AWAITING_APPROVAL
    assert s["promotion"]["approval"] == {
        "decision": "Approved", "runId": RUN, "time": NOW,
        "message": f"approved through the annotation {APPROVE}={RUN}; Job j-promote is "
                   "promoting the run"}
    assert promoted(s)[:2] == ("False", c.REASON_AWAITING_APPROVAL)
    assert "Job j-promote is promoting" in promoted(s)[2]
    # While the Job runs, the same world decides the same: no second Job, no new Event, and
    # nothing to patch (the recorded time stays the decision's).
    again = run(s, {APPROVE: RUN}, promote_job(), now=LATER)
    assert again.status == s and not again.promote and again.events == []


def test_the_promote_jobs_success_promotes_the_run_once() -> None:
    decided = run(finished(), {APPROVE: RUN}).status
    summary = TerminationSummary("Succeeded", c.REASON_PROMOTED, "promoted",
                                 promoted=True, promotion={"verdict": "Promoted",
                                                           "modelVersion": "3"})
    outcome = run(decided, {APPROVE: RUN}, promote_job("Complete"),
                  [pod(0, summary.to_message())], now=LATER)
    s = outcome.status
    assert not outcome.promote and reasons(outcome) == [c.REASON_APPROVED]
    assert s["promotion"]["verdict"] == "Promoted" and s["promotion"]["reason"] == "Promoted"
    assert s["promotion"]["time"] == LATER and s["promotion"]["modelVersion"] == "3"
    assert s["promotion"]["approval"]["decision"] == "Approved"
    assert s["promotion"]["approval"]["time"] == NOW  # when it was approved
    status, reason, message = promoted(s)
    assert (status, reason) == ("True", "Promoted")
    assert f"the annotation {APPROVE}={RUN}" in message and JUDGED in message
    # Promoted for good: the annotation that approved it changes nothing any more, and a
    # later reject is refused.
    settled = run(s, {APPROVE: RUN}, None, now=LATEST)
    assert settled.status == s and settled.events == []
    late = run(s, {REJECT: RUN}, None, now=LATEST)
    assert reasons(late) == [c.REASON_APPROVAL_REFUSED] and late.status == s
    assert "was already approved" in late.events[0].message


def test_a_failed_promotion_says_why_once_and_a_deleted_job_tries_again() -> None:
    decided = run(finished(), {APPROVE: RUN}).status
    why = TerminationSummary("Failed", "StorageError", "s3://models unreachable").to_message()
    outcome = run(decided, {APPROVE: RUN}, promote_job("Failed"),
                  [pod(75, "older", "2026-01-01T00:00:01Z"), pod(75, why)], now=LATER)
    s = outcome.status
    assert not outcome.promote and reasons(outcome) == ["PromotionFailed"]
    assert outcome.events[0].type == "Warning"
    assert s["promotion"]["verdict"] == c.REASON_AWAITING_APPROVAL
    status, reason, message = promoted(s)
    assert (status, reason) == ("False", c.REASON_AWAITING_APPROVAL)
    assert "s3://models unreachable" in message and "Delete the Job to try again" in message
    again = run(s, {APPROVE: RUN}, promote_job("Failed"), [pod(75, why)], now=LATEST)
    assert again.status == s and again.events == []
    # The Job deleted: the recorded approval starts it again, annotation or not.
    retry = run(s, None, None, now=LATEST)
    assert retry.promote and reasons(retry) == ["Promoting"]


def test_rejection_is_recorded_and_final() -> None:
    outcome = run(finished(), {REJECT: RUN})
    s = outcome.status
    assert not outcome.promote and reasons(outcome) == [c.REASON_REJECTED]
    assert s["promotion"]["verdict"] == "Rejected" and s["promotion"]["reason"] == "Rejected"
    assert s["promotion"]["approval"]["decision"] == "Rejected"
    assert promoted(s)[:2] == ("False", c.REASON_REJECTED)
    assert run(s, {REJECT: RUN}, now=LATER).events == []
    refused = run(s, {APPROVE: RUN}, now=LATER)
    assert reasons(refused) == [c.REASON_APPROVAL_REFUSED] and not refused.promote
    assert "was already rejected" in refused.events[0].message


def test_a_reject_while_the_promote_job_runs_is_refused_and_after_a_failure_is_taken() -> None:
    decided = run(finished(), {APPROVE: RUN}).status
    running = run(decided, {REJECT: RUN}, promote_job())
    assert reasons(running) == [c.REASON_APPROVAL_REFUSED]
    assert "being promoted by Job j-promote" in running.events[0].message
    assert running.status == decided
    after = run(decided, {REJECT: RUN}, promote_job("Failed"), [], now=LATER)
    assert after.status["promotion"]["verdict"] == "Rejected"
    assert after.status["promotion"]["approval"] == {
        "decision": "Rejected", "runId": RUN, "time": LATER,
        "message": f"rejected through the annotation {REJECT}={RUN}"}
    assert reasons(after) == [c.REASON_REJECTED]


@pytest.mark.parametrize("job", [promote_job(owner="an-earlier-trainingjob"),
                                 promote_job(deleting=True)])
def test_a_promote_job_that_is_not_ours_or_going_away_is_waited_for(job: dict[str, Any]
                                                                     ) -> None:
    status = finished()
    outcome = run(status, {APPROVE: RUN}, job)
    assert not outcome.promote and outcome.events == [] and outcome.status == status


def test_the_failure_message_comes_from_the_last_pod_or_else_the_job() -> None:
    job = promote_job("Failed")
    assert approval.failure_message(job, []) == \
        "BackoffLimitExceeded: Job has reached the specified backoff limit"
    assert approval.failure_message(job, [pod(1, "Traceback ...\nKeyError: 'x'\n")]) == \
        "Traceback ...\nKeyError: 'x'"
    permanent = TerminationSummary("Failed", c.REASON_APPROVAL_REFUSED,
                                   f"{RUN} is not awaiting approval", permanent=True)
    assert approval.failure_message(job, [pod(EXIT_PERMANENT, permanent.to_message())]) == \
        f"{RUN} is not awaiting approval"
    assert approval.failure_message(job, [pod(1, "")]) == "exit code 1"


def test_the_promote_job_is_read_only_when_a_decision_is_pending() -> None:
    def body(status: dict[str, Any], annotations: dict[str, str] | None = None
             ) -> dict[str, Any]:
        return {"metadata": {"annotations": annotations or {}}, "status": status}

    assert not approval.wants_promote_job(body(finished()))
    assert approval.wants_promote_job(body(finished(), {APPROVE: "anything"}))
    assert not approval.wants_promote_job(body(finished(c.REASON_PROMOTED), {APPROVE: RUN}))
    decided = run(finished(), {APPROVE: RUN}).status
    assert approval.wants_promote_job(body(decided))
    assert not approval.wants_promote_job(body({}, {APPROVE: RUN}))


def test_the_lifecycle_hands_a_finished_job_to_approval_and_ignores_a_running_ones() -> None:
    spec = TrainingJobSpec.model_validate({"task": "custom", "command": ["true"]})
    meta = {"name": "j", "namespace": "ns", "uid": UID, "generation": 1,
            "annotations": {APPROVE: RUN}}
    decision = lifecycle_assess({"metadata": meta, "status": finished()}, spec, None, None, NOW)
    assert decision.action == "promote" and [e.reason for e in decision.events] == ["Promoting"]
    # A run still in progress has no verdict to approve yet: the annotation waits for it.
    running = copy.deepcopy(meta)
    worker = {"metadata": {"name": "j-worker", "uid": "w",
                           "annotations": {"tailor.dev/attempt": "0"}},
              "spec": {}, "status": {"active": 1, "ready": 1}}
    started = lifecycle_assess({"metadata": running, "status": {}}, spec, None, None, NOW)
    decision = lifecycle_assess({"metadata": running, "status": started.status}, spec, worker,
                                None, NOW)
    assert decision.action == "none"
    assert not [e for e in decision.events if e.reason == c.REASON_APPROVAL_REFUSED]
