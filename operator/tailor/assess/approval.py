"""Manual approval of a run awaiting it, as a pure function: annotations + status + the
promote Job -> the new status, Events, and whether to start the promote Job.

With `promotion.policy: Manual` a run that earned promotion finishes with the verdict
AwaitingApproval. A person, or a GitOps tool applying the manifest from git, then sets the
annotation `tailor.dev/approve: <runId>` (or `tailor.dev/reject: <runId>`) on the TrainingJob.
The run id, not a yes/no flag, makes a stale or copied annotation harmless: it names one run,
and a re-created job (a new run) is never approved by an annotation left over from the last.

- An annotation that does not name the run awaiting approval (another run, a job whose verdict
  is not AwaitingApproval, both annotations at once) is refused: a Warning Event
  `ApprovalRefused` saying why, and nothing else changes.
- Reject: the verdict becomes Rejected (reason Rejected), recorded in
  `status.promotion.approval` and as an Event.
- Approve: the decision is recorded, and one Job `<job>-promote` runs the trainer image's
  `python -m tailor_trainer.promote`, which publishes the run through the same code as the
  automatic path. Its success makes the verdict Promoted; its failure leaves the run awaiting
  approval with the cause in the condition (deleting the Job tries again).

The decision lives in status and the promotion in a Job with a deterministic name, so a
restarted operator continues where it left off. Annotations are read only once the run has
finished: a verdict cannot be approved before it exists.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tailor_contract import constants as c
from tailor_contract import names
from tailor_contract.trainer_api import TerminationSummary

from tailor.assess.conditions import Event, find, is_true, upsert

Decision = Literal["Approved", "Rejected"]
APPROVED: Decision = "Approved"
REJECTED: Decision = "Rejected"
ANNOTATIONS: tuple[tuple[str, Decision], ...] = ((c.ANNOTATION_APPROVE, APPROVED),
                                                 (c.ANNOTATION_REJECT, REJECTED))
MESSAGE_LIMIT = 1024


@dataclass(frozen=True)
class Request:
    """One approve or reject annotation: the decision it asks for and the run it names."""

    decision: Decision
    annotation: str
    run_id: str

    def __str__(self) -> str:
        return f"{self.annotation}={self.run_id}"


@dataclass
class Outcome:
    status: dict[str, Any]
    promote: bool = False  # create the promote Job
    events: list[Event] = field(default_factory=list)


def requests(annotations: Mapping[str, str] | None) -> list[Request]:
    """The approve and reject annotations present (values stripped of blanks)."""
    found = []
    for key, decision in ANNOTATIONS:
        value = (annotations or {}).get(key)
        if value is not None:
            found.append(Request(decision, key, value.strip()))
    return found


def awaiting(status: Mapping[str, Any]) -> bool:
    """The run succeeded and its verdict waits for a person."""
    return is_true(status.get("conditions"), c.CONDITION_SUCCEEDED) and \
        (status.get("promotion") or {}).get("verdict") == c.REASON_AWAITING_APPROVAL


def wants_promote_job(body: Mapping[str, Any]) -> bool:
    """Whether `assess` needs the promote Job: only while a run awaits approval and someone
    has asked for a decision (or one was recorded), so a finished job costs no read."""
    status = body.get("status") or {}
    return awaiting(status) and bool(
        requests(body.get("metadata", {}).get("annotations"))
        or ((status.get("promotion") or {}).get("approval") or {}).get("decision") == APPROVED)


def job_state(job: Mapping[str, Any] | None, owner_uid: str) -> str:
    """`none`, `running`, `succeeded`, `failed`, or `waiting` (being deleted, or left by an
    earlier TrainingJob of the same name: wait until it is gone, which is an event too)."""
    if job is None:
        return "none"
    meta = job.get("metadata", {})
    owners = {o.get("uid") for o in meta.get("ownerReferences") or []}
    if meta.get("deletionTimestamp") or owner_uid not in owners:
        return "waiting"
    conditions = (job.get("status") or {}).get("conditions")
    if is_true(conditions, "Complete"):
        return "succeeded"
    if is_true(conditions, "Failed"):
        return "failed"
    return "running"


def failure_message(job: Mapping[str, Any], pods: list[dict[str, Any]] | None) -> str:
    """Why the promote Job failed: what its last pod reported (the trainer's summary, else its
    termination message, which falls back to the log's tail), else the Job's own reason."""
    last: tuple[str, str] | None = None
    for pod in pods or []:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            ended = (container.get("state") or {}).get("terminated") or {}
            if ended.get("exitCode", 0) == 0:
                continue
            text = ended.get("message") or ""
            summary = TerminationSummary.parse(text)
            said = (summary.message or summary.reason) if summary is not None else text.strip()
            said = said or f"exit code {ended.get('exitCode')}"
            if last is None or str(ended.get("finishedAt", "")) >= last[0]:
                last = (str(ended.get("finishedAt", "")), said)
    if last is not None:
        return last[1][-MESSAGE_LIMIT:]
    failed = find((job.get("status") or {}).get("conditions"), "Failed") or {}
    return f"{failed.get('reason', 'Failed')}: {failed.get('message', 'no pod left to read')}"


def model_version(pods: list[dict[str, Any]] | None) -> str | None:
    """The MLflow version the promote Job registered, if its summary says (best effort: the
    registry is optional, and the production pointer is what serving reads)."""
    for pod in pods or []:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            ended = (container.get("state") or {}).get("terminated") or {}
            summary = TerminationSummary.parse(ended.get("message"))
            version = summary.promotion.get("modelVersion") if summary is not None else None
            if isinstance(version, str | int) and not isinstance(version, bool) and version:
                return str(version)[:64]
    return None


class _Approval:
    """The new status, built from the old one."""

    def __init__(self, name: str, status: dict[str, Any], generation: int | None,
                 now: str) -> None:
        self.job = names.promote_job_name(name)
        self.new = copy.deepcopy(status)
        self.promotion: dict[str, Any] = self.new.setdefault("promotion", {})
        self.run = str(status.get("runId", ""))
        self.generation, self.now = generation, now
        self.events: list[Event] = []

    @property
    def approval(self) -> dict[str, Any]:
        return dict(self.promotion.get("approval") or {})

    def decided(self, request: Request) -> bool:
        """The recorded decision is what `request` asks for: nothing more to do."""
        approval = self.approval
        return approval.get("decision") == request.decision and \
            approval.get("runId") == request.run_id

    def refuse(self, request: Request, why: str) -> None:
        self.events.append(Event("Warning", c.REASON_APPROVAL_REFUSED,
                                 f"refused {request}: {why}; nothing was changed"))

    def promoted_condition(self, value: bool, reason: str, message: str) -> None:
        self.new["conditions"] = upsert(self.new.get("conditions"), c.CONDITION_PROMOTED, value,
                                        reason, message[:MESSAGE_LIMIT], self.generation,
                                        self.now)

    def record(self, decision: str, message: str) -> None:
        """The decision in status.promotion.approval, its time the first time it was seen."""
        old = self.approval
        same = old.get("decision") == decision and old.get("runId") == self.run
        self.promotion["approval"] = {"decision": decision, "runId": self.run,
                                      "time": old.get("time") if same else self.now,
                                      "message": message[:MESSAGE_LIMIT]}

    def approved_by(self) -> str:
        return f"{c.ANNOTATION_APPROVE}={self.run}"

    def promoting(self) -> None:
        self.record(APPROVED, f"approved through the annotation {self.approved_by()}; "
                              f"Job {self.job} is promoting the run")
        self.promoted_condition(False, c.REASON_AWAITING_APPROVAL,
                                f"approved through the annotation {self.approved_by()}; "
                                f"Job {self.job} is promoting the run")

    def succeeded(self, version: str | None) -> None:
        judged = self.promotion.get("message", "")
        message = (f"promoted on approval: the annotation {self.approved_by()} (at "
                   f"{self.approval.get('time', self.now)}), published by Job {self.job}"
                   + (f"; the verdict: {judged}" if judged else ""))
        self.record(APPROVED, f"promoted by Job {self.job}")
        self.promotion.update(verdict=c.REASON_PROMOTED, reason=c.REASON_PROMOTED,
                              message=message[:MESSAGE_LIMIT], time=self.now)
        if version:
            self.promotion["modelVersion"] = version
        self.promoted_condition(True, c.REASON_PROMOTED, message)
        self.events.append(Event("Normal", c.REASON_APPROVED, message))

    def failed(self, why: str) -> None:
        before = self.approval.get("message")
        self.record(APPROVED, f"the promotion failed: {why}")
        self.promoted_condition(
            False, c.REASON_AWAITING_APPROVAL,
            f"approved through the annotation {self.approved_by()}, but Job {self.job} failed: "
            f"{why}. Delete the Job to try again, or reject the run with {c.ANNOTATION_REJECT}")
        if self.approval["message"] != before:
            self.events.append(Event("Warning", c.REASON_PROMOTION_FAILED,
                                     f"Job {self.job} failed to promote run {self.run}: {why}"))

    def rejected(self, request: Request) -> None:
        message = f"rejected through the annotation {request}"
        self.record(REJECTED, message)
        self.promotion.update(verdict="Rejected", reason=c.REASON_REJECTED, message=message,
                              time=self.now)
        self.promoted_condition(False, c.REASON_REJECTED, message)
        self.events.append(Event("Normal", c.REASON_REJECTED, f"run {self.run} {message}"))


def _not_awaiting(a: _Approval, status: Mapping[str, Any]) -> str:
    """Why a finished run cannot be approved or rejected."""
    promotion = status.get("promotion") or {}
    approval = a.approval
    if approval.get("decision") in (APPROVED, REJECTED) and approval.get("runId") == a.run:
        return (f"run {a.run} was already {approval['decision'].lower()} "
                f"({approval.get('time', '')})")
    if not is_true(status.get("conditions"), c.CONDITION_SUCCEEDED):
        return f"run {a.run} failed and has no verdict to approve"
    return (f"run {a.run} is not awaiting approval (verdict "
            f"{promotion.get('verdict', 'none')}, {promotion.get('reason', 'no reason')})")


def assess(name: str, uid: str, status: dict[str, Any], annotations: Mapping[str, str] | None,
           promote_job: Mapping[str, Any] | None, pods: list[dict[str, Any]] | None,
           generation: int | None, now: str) -> Outcome:
    """What to do for a finished TrainingJob `name` (its status as built so far) given its
    approve/reject annotations and its promote Job (`pods`: that Job's, once it finished)."""
    a = _Approval(name, status, generation, now)
    asked = requests(annotations)
    if not awaiting(status):
        for request in asked:
            if not a.decided(request):
                a.refuse(request, _not_awaiting(a, status))
        return Outcome(status, events=a.events)
    for request in asked:
        if request.run_id != a.run:
            a.refuse(request, f"it names run {request.run_id or '(empty)'}, but the run "
                              f"awaiting approval is {a.run}")
    valid = [r for r in asked if r.run_id == a.run]
    state = job_state(promote_job, uid)
    if state == "succeeded":
        a.succeeded(model_version(pods))
    elif state == "running":
        for request in valid:
            if request.decision == REJECTED:
                a.refuse(request, f"run {a.run} is being promoted by Job {a.job}")
        a.promoting()
    elif state == "waiting":
        pass  # the Job's deletion is an event of its own, which reconciles again
    elif len(valid) == 2:
        for request in valid:
            a.refuse(request, f"both {c.ANNOTATION_APPROVE} and {c.ANNOTATION_REJECT} name "
                              f"run {a.run}; remove one")
        if state == "failed":
            a.failed(failure_message(promote_job or {}, pods))
    elif valid and valid[0].decision == REJECTED:
        a.rejected(valid[0])
    elif state == "failed":
        a.failed(failure_message(promote_job or {}, pods))
    elif valid or a.approval.get("decision") == APPROVED:
        # Approved now, or earlier with the Job gone (deleted to try again, or never created
        # before a crash): start it. The Job comes first, so a crash before the status patch
        # only repeats this step.
        a.promoting()
        a.events.append(Event("Normal", c.REASON_PROMOTING,
                              f"{a.approved_by()} approves run {a.run}: promoting it through "
                              f"Job {a.job}"))
        return Outcome(a.new, promote=True, events=a.events)
    return Outcome(a.new, events=a.events)
