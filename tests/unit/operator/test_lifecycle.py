"""The TrainingJob lifecycle (`tailor.assess.trainingjob.assess`) as a pure function."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tailor.assess.conditions import find
from tailor.assess.trainingjob import assess, diagnose
from tailor.builders.trainingjob import JobRef
from tailor_contract import constants as c
from tailor_contract import trainer_api
from tailor_contract.trainer_api import TerminationSummary
from tailor_contract.trainingjob import TrainingJobSpec

NOW = "2026-01-01T00:01:00Z"
SPEC = TrainingJobSpec.model_validate({"task": "custom", "command": ["true"], "workers": 2,
                                       "runPolicy": {"backoffLimit": 1}})


def body(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "j", "namespace": "ns", "uid": "abcdef0123", "generation": 1,
                         "resourceVersion": "1"}, "status": status or {}}


def job(attempt: int = 0, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "j-worker", "uid": "u1",
                         "annotations": {"tailor.dev/attempt": str(attempt)}},
            "spec": {}, "status": status}


def failed_pod(index: int, code: int, reason: str = "Error", message: str = "",
               finished: str = "2026-01-01T00:00:30Z") -> dict[str, Any]:
    return {"metadata": {"labels": {"batch.kubernetes.io/job-completion-index": str(index)}},
            "status": {"containerStatuses": [{"state": {"terminated": {
                "exitCode": code, "reason": reason, "message": message,
                "finishedAt": finished}}}]}}


def message_of(status: dict[str, Any], kind: str) -> str:
    found = find(status["conditions"], kind)
    assert found is not None
    return str(found["message"])


def cond(status: dict[str, Any], kind: str) -> tuple[str, str]:
    c = find(status["conditions"], kind)
    assert c is not None
    return c["status"], c["reason"]


def test_a_new_job_creates_its_workers_and_reports_pending() -> None:
    decision = assess(body(), SPEC, None, None, NOW)
    assert decision.action == "create" and decision.attempt == 0
    s = decision.status
    assert s["phase"] == "Pending" and s["startTime"] == NOW and s["runId"] == "run-abcdef01"
    assert cond(s, "Reconciling") == ("True", "Created")
    assert cond(s, "Ready")[0] == "False"
    assert [e.reason for e in decision.events] == ["Created"]
    # What only the trainer can tell is Unknown from the first reconcile on.
    assert cond(s, "DataQualityPassed") == ("Unknown", "Pending")
    assert cond(s, "Promoted") == ("Unknown", "Pending")
    assert all(c["lastTransitionTime"] == NOW for c in s["conditions"])


def test_one_run_id_formula_for_status_and_children() -> None:
    """The status's runId, the children's TAILOR_RUN_ID and the trainer's are one formula."""
    uid = "abcdef0123"
    assert assess(body(), SPEC, None, None, NOW).status["runId"] == trainer_api.run_id(uid)
    assert JobRef("j", "ns", uid).run_id == trainer_api.run_id(uid) == "run-abcdef01"


def test_an_unchanged_world_yields_the_same_status_and_no_events() -> None:
    first = assess(body(), SPEC, None, None, NOW).status
    running = job(active=2, ready=2)
    second = assess(body(first), SPEC, running, None, NOW)
    third = assess(body(copy.deepcopy(second.status)), SPEC, running, None,
                   "2026-01-01T00:09:00Z")
    assert third.status == second.status and third.events == [] and third.action == "none"


def test_all_workers_ready_is_running() -> None:
    decision = assess(body(), SPEC, job(active=2, ready=2), None, NOW)
    assert decision.status["phase"] == "Running"
    assert cond(decision.status, "Running") == ("True", "WorkersRunning")
    assert decision.status["workers"]["summary"] == "2/2"


def test_success_reads_the_summary_of_worker_zero() -> None:
    summary = trainer_api.TerminationSummary("Succeeded", "Promoted", promoted=True,
                                          artifact_uri="s3://runs/j/run-1/", mlflow_run_id="r1",
                                          metrics={"test": 0.91, "baseline": 0.8,
                                                   "pValue": 0.001})
    pod = failed_pod(0, 0, "Completed", summary.to_message())
    done = job(succeeded=2, conditions=[{"type": "Complete", "status": "True"}])
    assert assess(body(), SPEC, done, None, NOW).action == "none"  # asks for the pods first
    decision = assess(body(), SPEC, done, [pod], NOW)
    s = decision.status
    assert s["phase"] == "Succeeded" and s["completionTime"] == NOW
    assert cond(s, "Succeeded") == ("True", "Completed") and cond(s, "Ready")[0] == "True"
    assert s["metrics"] == {"metric": "accuracy", "test": 0.91, "baseline": 0.8}
    assert s["promotion"]["verdict"] == "Promoted" and s["promotion"]["pValue"] == 0.001
    assert s["artifacts"]["runUri"] == "s3://runs/j/run-1/" and s["mlflowRunId"] == "r1"


def test_a_retryable_failure_restarts_the_whole_group() -> None:
    failed = job(failed=1, conditions=[{"type": "Failed", "status": "True",
                                        "reason": "BackoffLimitExceeded"}])
    pods = [failed_pod(0, 143), failed_pod(1, 1, message="CUDA error")]
    decision = assess(body(), SPEC, failed, pods, NOW)
    assert decision.action == "delete" and decision.attempt == 1
    s = decision.status
    assert s["workers"]["restarts"] == 1 and s["phase"] == "Restarting"
    assert s["failure"] == {"reason": "WorkerFailed", "message": "CUDA error", "exitCode": 1,
                            "worker": 1, "time": NOW}
    # Once the old group is gone, the next attempt is created.
    gone = assess(body(s), SPEC, None, None, NOW)
    assert gone.action == "create" and gone.attempt == 1
    # A leftover group of an earlier attempt is deleted, never adopted.
    assert assess(body(s), SPEC, job(attempt=0, active=2), None, NOW).action == "delete"


def test_the_backoff_limit_ends_in_failure_with_the_last_reason() -> None:
    failed = job(attempt=1, conditions=[{"type": "Failed", "status": "True"}])
    pods = [failed_pod(0, 137, "OOMKilled")]
    decision = assess(body({"workers": {"restarts": 1}}), SPEC, failed, pods, NOW)
    assert decision.action == "none"
    s = decision.status
    assert cond(s, "Failed") == ("True", "BackoffLimitExceeded")
    assert "OOMKilled" in (find(s["conditions"], "Failed") or {})["message"]
    assert cond(s, "Stalled")[0] == "True" and s["phase"] == "Failed"


def test_the_permanent_exit_code_fails_at_once() -> None:
    failed = job(conditions=[{"type": "Failed", "status": "True"}])
    message = trainer_api.TerminationSummary("Failed", "DataQualityFailed",
                                          "label column 'label' missing",
                                          permanent=True).to_message()
    decision = assess(body(), SPEC, failed, [failed_pod(0, trainer_api.EXIT_PERMANENT,
                                                        message=message)], NOW)
    assert decision.action == "none"
    assert cond(decision.status, "Failed") == ("True", "DataQualityFailed")
    assert decision.status["workers"]["restarts"] == 0
    assert decision.status["failure"]["message"] == "label column 'label' missing"


def test_diagnose_names_the_first_worker_to_fail() -> None:
    evicted = {"metadata": {"labels": {}}, "status": {"reason": "Evicted",
                                                      "message": "node memory pressure"}}
    assert diagnose([failed_pod(0, 143), evicted]).reason == "Evicted"
    early, late = "2026-01-01T00:00:10Z", "2026-01-01T00:00:12Z"
    # A worker killed first; its peer's collective fails after it.
    assert diagnose([failed_pod(0, 1, finished=late), failed_pod(1, 137, finished=early)]
                    ).worker == 1
    # A worker crashes; the group is torn down (SIGTERM) in the same second.
    assert diagnose([failed_pod(0, 143), failed_pod(1, 2)]).worker == 1
    # At the same second, a kill outranks a peer's error.
    assert diagnose([failed_pod(0, 1), failed_pod(1, 137)]).worker == 1


def test_suspend_deletes_the_workers_and_resume_creates_them() -> None:
    suspended = TrainingJobSpec.model_validate({**SPEC.model_dump(by_alias=True),
                                                "runPolicy": {"suspend": True}})
    decision = assess(body(), suspended, job(active=2), None, NOW)
    assert decision.action == "delete"
    assert cond(decision.status, "Suspended") == ("True", "Suspended")
    assert cond(decision.status, "Reconciling")[0] == "False"
    resumed = assess(body(decision.status), SPEC, None, None, NOW)
    assert resumed.action == "create"
    assert cond(resumed.status, "Reconciling") == ("True", "Resumed")


def test_the_deadline_counts_from_the_first_start() -> None:
    spec = TrainingJobSpec.model_validate({**SPEC.model_dump(by_alias=True),
                                           "runPolicy": {"activeDeadlineSeconds": 100}})
    started = {"startTime": "2026-01-01T00:00:00Z"}
    assert assess(body(started), spec, None, None, NOW).deadline_seconds == 40
    late = assess(body(started), spec, None, None, "2026-01-01T00:02:00Z")
    assert late.action == "none" and cond(late.status, "Failed")[1] == "DeadlineExceeded"


def test_finished_jobs_are_left_alone() -> None:
    done = assess(body(), SPEC, job(conditions=[{"type": "Complete", "status": "True"}]),
                  [], NOW).status
    again = assess(body(done), SPEC, None, None, "2026-01-02T00:00:00Z")
    assert again.action == "none" and again.status == done


def test_a_retrain_carries_its_trigger_and_production_data_into_status() -> None:
    import json

    lineage = {"driftMonitor": "m", "reason": "AccuracyBelowThreshold", "message": "0.6 < 0.8",
               "windowStart": "2026-01-01T00:00:00Z", "windowEnd": "2026-01-01T01:00:00Z",
               "time": NOW, "unknown": "dropped",
               "productionData": {"uri": "s3://b/news/production-data/m-retrain-1.parquet",
                                  "rows": 160}}
    retrain = body()
    retrain["metadata"]["annotations"] = {"tailor.dev/trigger": json.dumps(lineage)}
    triggered = assess(retrain, SPEC, None, None, NOW).status["triggeredBy"]
    assert triggered == {k: v for k, v in lineage.items() if k != "unknown"}
    lineage["productionData"] = "not an object"
    retrain["metadata"]["annotations"] = {"tailor.dev/trigger": json.dumps(lineage)}
    assert "productionData" not in assess(retrain, SPEC, None, None, NOW).status["triggeredBy"]


# --------------------------------------------------------------------------- outcome conditions

def done(*summaries: TerminationSummary | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A completed worker Job, and its pods with these termination summaries (worker 0 first)."""
    pods = [failed_pod(i, 0, "Completed", s.to_message() if s else "")
            for i, s in enumerate(summaries)]
    return job(succeeded=len(pods), conditions=[{"type": "Complete", "status": "True"}]), pods


@pytest.mark.parametrize(("quality", "status", "reason"), [
    (trainer_api.QUALITY_PASSED, "True", "DataQualityPassed"),
    (trainer_api.QUALITY_WARNINGS, "True", "DataQualityWarnings"),
])
def test_the_data_quality_gate_the_trainer_reports_is_a_condition(
        quality: str, status: str, reason: str) -> None:
    summary = TerminationSummary("Succeeded", "Promoted", promoted=True, data_quality=quality,
                                 data_quality_message="duplicates: 7% of rows (max 5%)")
    s = assess(body(), SPEC, *done(summary, None), NOW).status
    assert cond(s, "DataQualityPassed") == (status, reason)
    assert message_of(s, "DataQualityPassed") == "duplicates: 7% of rows (max 5%)"


def test_a_failed_gate_fails_the_run_and_says_why_in_the_condition() -> None:
    failed = job(conditions=[{"type": "Failed", "status": "True"}])
    message = TerminationSummary("Failed", c.REASON_DATA_QUALITY_FAILED, "2 checks failed",
                                 permanent=True, data_quality=trainer_api.QUALITY_FAILED,
                                 data_quality_message="conflicting labels: 3%").to_message()
    s = assess(body(), SPEC, failed, [failed_pod(0, trainer_api.EXIT_PERMANENT,
                                                 message=message)], NOW).status
    assert cond(s, "Failed") == ("True", "DataQualityFailed")
    assert cond(s, "DataQualityPassed") == ("False", "DataQualityFailed")
    assert message_of(s, "DataQualityPassed") == "conflicting labels: 3%"
    assert cond(s, "Promoted") == ("False", "NotApplicable")
    # A trainer that names only the reason still fails the gate's condition.
    older = TerminationSummary("Failed", c.REASON_DATA_QUALITY_FAILED, "too few examples",
                               permanent=True).to_message()
    s = assess(body(), SPEC, failed, [failed_pod(0, 42, message=older)], NOW).status
    assert cond(s, "DataQualityPassed") == ("False", "DataQualityFailed")


def test_a_gate_reported_before_a_restart_is_kept() -> None:
    failed = job(conditions=[{"type": "Failed", "status": "True"}])
    message = TerminationSummary("Failed", "Crashed", "CUDA error",
                                 data_quality=trainer_api.QUALITY_PASSED).to_message()
    decision = assess(body(), SPEC, failed, [failed_pod(0, 1, message=message)], NOW)
    assert decision.action == "delete"
    assert cond(decision.status, "DataQualityPassed") == ("True", "DataQualityPassed")
    assert cond(decision.status, "Promoted") == ("Unknown", "Pending")


@pytest.mark.parametrize(("promoted", "reason", "status", "verdict"), [
    (True, "Promoted", "True", "Promoted"),
    (False, "NotBetter", "False", "Rejected"),
    (False, "NotSignificant", "False", "Rejected"),
    (False, "AwaitingApproval", "False", "AwaitingApproval"),
])
def test_the_promotion_verdict_is_a_condition(promoted: bool, reason: str, status: str,
                                              verdict: str) -> None:
    summary = TerminationSummary("Succeeded", reason, "macro-f1 0.91 vs generic 0.80",
                                 promoted=promoted, data_quality=trainer_api.QUALITY_PASSED)
    s = assess(body(), SPEC, *done(summary), NOW).status
    assert cond(s, "Promoted") == (status, reason)
    assert message_of(s, "Promoted") == "macro-f1 0.91 vs generic 0.80"
    assert s["promotion"]["verdict"] == verdict
    assert cond(s, "DataQualityPassed") == ("True", "DataQualityPassed")


def test_a_run_without_a_verdict_or_a_gate_says_not_applicable() -> None:
    """A custom command writes no summary (or one without a verdict)."""
    for summary in (None, TerminationSummary("Succeeded", "Completed", "done")):
        s = assess(body(), SPEC, *done(summary), NOW).status
        assert cond(s, "Succeeded") == ("True", "Completed")
        assert cond(s, "Promoted") == ("False", "NotApplicable")
        assert cond(s, "DataQualityPassed") == ("Unknown", "NotApplicable")
        assert s["promotion"] == {"verdict": "NotApplicable", "reason": "NotApplicable",
                                  "time": NOW}


def test_a_failed_run_has_no_verdict() -> None:
    failed = job(attempt=1, conditions=[{"type": "Failed", "status": "True"}])
    s = assess(body({"workers": {"restarts": 1}}), SPEC, failed, [failed_pod(0, 1)], NOW).status
    assert cond(s, "Failed")[1] == "BackoffLimitExceeded"
    assert cond(s, "Promoted") == ("False", "NotApplicable")
    assert cond(s, "DataQualityPassed") == ("Unknown", "NotApplicable")
    assert "promotion" not in s


# --------------------------------------------------------------------------- lost nodes

def gc_pod(index: int) -> dict[str, Any]:
    """A worker pod of a deleted Node, as the pod garbage collector leaves it (Kubernetes
    pkg/controller/podgc: phase Failed, DisruptionTarget DeletionByPodGC, then a force delete)."""
    return {"metadata": {"labels": {"batch.kubernetes.io/job-completion-index": str(index)}},
            "spec": {"nodeName": "gpu-node-7"},
            "status": {"phase": "Failed", "conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                 "message": "PodGC: node no longer exists"}]}}


def test_a_worker_whose_node_was_deleted_is_node_lost() -> None:
    failure = diagnose([failed_pod(0, 143), gc_pod(1)])
    assert (failure.reason, failure.worker) == ("NodeLost", 1)
    assert "gpu-node-7" in failure.message and "node no longer exists" in failure.message
    failed = job(failed=1, conditions=[{"type": "Failed", "status": "True"}])
    decision = assess(body(), SPEC, failed, [failed_pod(0, 143), gc_pod(1)], NOW)
    assert decision.action == "delete"  # retryable: the whole group restarts
    assert decision.status["failure"]["reason"] == "NodeLost"
    [event] = decision.events
    assert event.reason == "Restarting" and "NodeLost" in event.message


def test_the_node_lost_reason_of_older_node_controllers_is_node_lost() -> None:
    pod = {"metadata": {"labels": {}}, "status": {
        "reason": "NodeLost", "message": "Node gpu-node-7 which was running pod x is unresponsive"}}
    failure = diagnose([pod])
    assert failure.reason == "NodeLost" and "unresponsive" in failure.message


def test_other_disruptions_are_evictions() -> None:
    preempted = {"metadata": {"labels": {}}, "status": {"phase": "Failed", "conditions": [
        {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]}}
    assert diagnose([preempted]).reason == "Evicted"


def test_a_group_whose_pods_are_all_gone_is_a_worker_failure_that_says_so() -> None:
    failure = diagnose([])
    assert failure.reason == "WorkerFailed" and "deleted" in failure.message


# --------------------------------------------------------------------------- Kueue, restarts

QUEUED = TrainingJobSpec.model_validate({**SPEC.model_dump(by_alias=True),
                                         "scheduling": {"queueName": "gpus"}})


def test_a_job_waiting_for_kueue_is_suspended_and_queued() -> None:
    """As a batch/v1 Job Kueue has not admitted: Suspended (Argo CD shows it Suspended), yet
    still Reconciling (kstatus: in progress), since it starts without anyone's help."""
    pending = assess(body(), QUEUED, None, None, NOW).status
    decision = assess(body(pending), QUEUED, {**job(), "spec": {"suspend": True}}, None, NOW)
    s = decision.status
    assert decision.action == "none" and s["phase"] == "Suspended"
    assert cond(s, "Suspended") == ("True", "Queued")
    assert cond(s, "Reconciling") == ("True", "Queued")
    assert cond(s, "Running") == ("False", "Queued")
    assert [(e.type, e.reason) for e in decision.events] == [("Normal", "Queued")]
    admitted = assess(body(s), QUEUED, job(active=2), None, NOW).status
    assert cond(admitted, "Suspended") == ("False", "WorkersStarting")
    assert admitted["phase"] == "Pending"
    # Suspending a queued job by its spec is a user's suspend; resuming it says Resumed.
    user = TrainingJobSpec.model_validate({**QUEUED.model_dump(by_alias=True),
                                           "runPolicy": {"suspend": True}})
    suspended = assess(body(s), user, {**job(), "spec": {"suspend": True}}, None, NOW)
    assert suspended.action == "delete"
    assert cond(suspended.status, "Suspended") == ("True", "Suspended")
    assert cond(suspended.status, "Reconciling")[0] == "False"
    resumed = assess(body(suspended.status), QUEUED, None, None, NOW)
    assert cond(resumed.status, "Reconciling") == ("True", "Resumed")


def test_the_restart_phase_lasts_until_the_new_group_runs() -> None:
    running = assess(body(), SPEC, job(active=2, ready=2), None, NOW).status
    failed = job(failed=1, conditions=[{"type": "Failed", "status": "True"}])
    restart = assess(body(running), SPEC, failed, [failed_pod(1, 137, "OOMKilled")], NOW).status
    later = "2026-01-01T00:02:00Z"
    recreated = assess(body(restart), SPEC, None, None, later)
    assert recreated.action == "create" and recreated.status["phase"] == "Restarting"
    assert cond(recreated.status, "Reconciling") == ("True", "Restarting")
    starting = assess(body(recreated.status), SPEC, job(1, active=2, ready=1), None, later)
    assert starting.status["phase"] == "Restarting" and starting.events == []
    assert cond(starting.status, "Reconciling") == ("True", "WorkersStarting")
    back = assess(body(starting.status), SPEC, job(1, active=2, ready=2), None, later).status
    assert back["phase"] == "Running"
    # A worker that is not ready later is not a restart any more.
    unready = assess(body(back), SPEC, job(1, active=2, ready=1), None, "2026-01-01T00:03:00Z")
    assert unready.status["phase"] == "Pending"
    # Suspended and resumed in the middle of a restart: the resumed group is not restarting.
    user = TrainingJobSpec.model_validate({**SPEC.model_dump(by_alias=True),
                                           "runPolicy": {"suspend": True}})
    paused = assess(body(restart), user, None, None, later).status
    resumed = assess(body(paused), SPEC, None, None, "2026-01-01T00:04:00Z").status
    assert resumed["phase"] == "Pending" and cond(resumed, "Reconciling")[1] == "Resumed"
    starting = assess(body(resumed), SPEC, job(1, active=2), None, "2026-01-01T00:04:00Z")
    assert starting.status["phase"] == "Pending"
