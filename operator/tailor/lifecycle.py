"""A TrainingJob's lifecycle as a pure function: what is observed -> what to do and what to say.

`assess` reads the TrainingJob, its parsed spec, its worker Job and (only once that Job has
finished) its pods, and returns the one action to take, the complete new status and the Events
of any transition. The controller applies it; an unchanged world yields an identical status,
so nothing is patched.

Conditions (documented in docs/operator.md):
- Succeeded / Failed: terminal, as on a batch/v1 Job (Argo CD's Job-like health reads them);
- Running: every worker pod is ready; Suspended: spec.runPolicy.suspend is honoured;
- Ready: True only once Succeeded; Reconciling: True while the job is in progress;
  Stalled: True once Failed (kstatus, and so Flux, read these three).
"""

from __future__ import annotations

import copy
import datetime
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from tailor.api import constants as c
from tailor.api import contract
from tailor.api.contract import EXIT_PERMANENT, TerminationSummary
from tailor.api.trainingjob import TrainingJobSpec
from tailor.builders.trainingjob import ANNOTATION_ATTEMPT, INDEX_LABEL
from tailor.conditions import find, is_true, upsert

Action = Literal["none", "create", "delete"]
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Decision:
    action: Action
    status: dict[str, Any]
    attempt: int = 0
    events: list[Event] = field(default_factory=list)
    deadline_seconds: int | None = None  # for a created Job: what is left of the deadline


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    exit_code: int | None = None
    worker: int | None = None
    permanent: bool = False


def _parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def _seconds_between(start: str, end: str) -> float:
    return (_parse_time(end) - _parse_time(start)).total_seconds()


def _job_condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    condition = find((job.get("status") or {}).get("conditions"), kind)
    return condition if condition is not None and condition.get("status") == "True" else None


def job_finished(job: dict[str, Any]) -> bool:
    """The worker Job has completed or failed for good."""
    return bool(_job_condition(job, "Complete") or _job_condition(job, "Failed"))


def job_essence(job: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """Everything `assess` and the controller read of a worker Job: two copies with the same
    essence lead to the same decision, so an event that leaves it unchanged needs no
    reconcile (the Job controller's many status updates mostly touch other fields)."""
    if job is None:
        return None
    meta, status = job.get("metadata", {}), job.get("status") or {}
    finished = tuple((kind, cond.get("reason")) for kind in ("Complete", "Failed")
                     if (cond := _job_condition(job, kind)) is not None)
    return (meta.get("uid"), meta.get("name"), bool(meta.get("deletionTimestamp")),
            (meta.get("annotations") or {}).get(ANNOTATION_ATTEMPT),
            bool((job.get("spec") or {}).get("suspend")),
            *(int(status.get(k, 0) or 0) for k in ("active", "ready", "succeeded", "failed")),
            finished)


def worker_index(pod: dict[str, Any]) -> int:
    return int(pod["metadata"].get("labels", {}).get(INDEX_LABEL, "0"))


def diagnose(pods: list[dict[str, Any]]) -> Failure:
    """The real reason a worker group failed, from its pods, first failure first."""
    candidates = []
    for pod in sorted(pods, key=worker_index):
        status = pod.get("status", {})
        index = worker_index(pod)
        if status.get("reason") == "Evicted" or is_true(status.get("conditions"),
                                                         "DisruptionTarget"):
            message = status.get("message") or "the worker pod was evicted"
            candidates.append(("", Failure(c.REASON_EVICTED, message, None, index)))
            continue
        for container in status.get("containerStatuses", []) or []:
            terminated = container.get("state", {}).get("terminated")
            if not terminated or terminated.get("exitCode", 0) == 0:
                continue
            code = int(terminated["exitCode"])
            text = terminated.get("message", "") or ""
            summary = TerminationSummary.parse(text)
            permanent = code == EXIT_PERMANENT or bool(summary and summary.permanent)
            if terminated.get("reason") == "OOMKilled":
                reason = c.REASON_OOM_KILLED
            elif permanent:
                reason = summary.reason if summary and summary.reason else \
                    c.REASON_PERMANENT_FAILURE
            else:
                reason = c.REASON_WORKER_FAILED
            message = summary.message if summary and summary.message else text.strip()
            message = message or f"worker {index} exited with code {code}"
            # The first worker to fail is the cause; the others fail after it (a collective
            # that lost a peer, the group torn down). At the same second, a SIGKILL (an OOM or
            # a kill) outranks an error, and SIGTERM (the teardown) comes last.
            severity = 0 if code == 137 else 2 if code == 143 else 1
            order = f"{terminated.get('finishedAt', '')}:{severity}"
            candidates.append((order, Failure(reason, message[-1024:], code, index, permanent)))
    if not candidates:
        return Failure(c.REASON_WORKER_FAILED, "a worker pod failed without an exit status")
    permanents = [f for _, f in candidates if f.permanent]
    if permanents:
        return permanents[0]
    first: Failure = sorted(candidates, key=lambda item: item[0])[0][1]
    return first


def _summary_of_success(pods: list[dict[str, Any]]) -> TerminationSummary | None:
    for pod in sorted(pods, key=worker_index):
        for container in pod.get("status", {}).get("containerStatuses", []) or []:
            terminated = container.get("state", {}).get("terminated") or {}
            summary = TerminationSummary.parse(terminated.get("message"))
            if summary is not None:
                return summary
    return None


def _apply_summary(status: dict[str, Any], summary: TerminationSummary, metric: str,
                   now: str) -> None:
    numbers = summary.metrics
    fields = {"validation": contract.SUMMARY_VALIDATION, "test": contract.SUMMARY_TEST,
              "baseline": contract.SUMMARY_BASELINE, "production": contract.SUMMARY_PRODUCTION}
    metrics: dict[str, Any] = {field: numbers[key] for field, key in fields.items()
                               if key in numbers}
    if metrics:
        status["metrics"] = {"metric": metric, **metrics}
        if contract.SUMMARY_TEST_EXAMPLES in numbers:
            status["metrics"]["testExamples"] = int(numbers[contract.SUMMARY_TEST_EXAMPLES])
    if summary.promoted is not None:
        verdict = "Promoted" if summary.promoted else (
            "AwaitingApproval" if summary.reason == c.REASON_AWAITING_APPROVAL else "Rejected")
        status["promotion"] = {"verdict": verdict, "reason": summary.reason, "time": now}
        if contract.SUMMARY_IMPROVEMENT in numbers:
            status["promotion"]["improvement"] = numbers[contract.SUMMARY_IMPROVEMENT]
        if contract.SUMMARY_P_VALUE in numbers:
            status["promotion"]["pValue"] = numbers[contract.SUMMARY_P_VALUE]
    if summary.artifact_uri:
        status.setdefault("artifacts", {})["runUri"] = summary.artifact_uri
    if summary.mlflow_run_id:
        status["mlflowRunId"] = summary.mlflow_run_id


class _Status:
    """Builds the new status from the old one."""

    def __init__(self, body: dict[str, Any], spec: TrainingJobSpec, now: str) -> None:
        self.old = body.get("status") or {}
        self.new = copy.deepcopy(self.old)
        self.generation = body.get("metadata", {}).get("generation")
        self.now = now
        self.new["observedGeneration"] = self.generation
        workers = self.new.setdefault("workers", {})
        workers.setdefault("restarts", 0)
        workers["desired"] = spec.workers

    def condition(self, kind: str, value: bool | None, reason: str, message: str) -> None:
        self.new["conditions"] = upsert(self.new.get("conditions"), kind, value, reason,
                                        message, self.generation, self.now)

    def phase(self, phase: str, reason: str, message: str, *, running: bool = False,
              suspended: bool = False) -> None:
        """Every non-terminal phase: the conditions that go with it."""
        self.new["phase"] = phase
        self.condition(c.CONDITION_RUNNING, running, reason, message)
        self.condition(c.CONDITION_SUSPENDED, suspended,
                       c.REASON_SUSPENDED if suspended else reason,
                       message if suspended else "")
        self.condition(c.CONDITION_READY, False, reason, message)
        self.condition(c.CONDITION_RECONCILING, not suspended, reason, message)
        self.condition(c.CONDITION_STALLED, False, reason, "")
        self.condition(c.CONDITION_SUCCEEDED, False, reason, "")
        self.condition(c.CONDITION_FAILED, False, reason, "")

    def counts(self, job: dict[str, Any] | None) -> None:
        js = (job or {}).get("status", {})
        workers = self.new["workers"]
        for key in ("active", "ready", "succeeded", "failed"):
            workers[key] = int(js.get(key, 0) or 0)
        workers["summary"] = f"{workers['ready']}/{workers['desired']}"

    def finish(self, succeeded: bool, reason: str, message: str) -> None:
        self.new["phase"] = "Succeeded" if succeeded else "Failed"
        self.new["completionTime"] = self.now
        self.condition(c.CONDITION_SUCCEEDED, succeeded, reason, message if succeeded else "")
        self.condition(c.CONDITION_FAILED, not succeeded, reason, "" if succeeded else message)
        self.condition(c.CONDITION_READY, succeeded, reason, message)
        self.condition(c.CONDITION_STALLED, not succeeded, reason, "" if succeeded else message)
        self.condition(c.CONDITION_RECONCILING, False, reason, "")
        self.condition(c.CONDITION_RUNNING, False, reason, "")
        self.condition(c.CONDITION_SUSPENDED, False, reason, "")

    def transition_events(self) -> list[Event]:
        old, new = self.old.get("phase"), self.new.get("phase")
        if old == new:
            return []
        reason_by_phase = {"Pending": c.REASON_CREATED, "Running": c.REASON_WORKERS_RUNNING,
                           "Restarting": c.REASON_RESTARTING, "Suspended": c.REASON_SUSPENDED,
                           "Succeeded": c.REASON_COMPLETED}
        failed = find(self.new.get("conditions"), c.CONDITION_FAILED) or {}
        if new == "Failed":
            return [Event("Warning", failed.get("reason", "Failed"), failed.get("message", ""))]
        if new == "Restarting":
            failure = self.new.get("failure", {})
            return [Event("Warning", c.REASON_RESTARTING,
                          f"restarting all workers (restart {self.new['workers']['restarts']}) "
                          f"after {failure.get('reason')}: {failure.get('message', '')}")]
        running = find(self.new.get("conditions"), c.CONDITION_RECONCILING) or {}
        return [Event("Normal", reason_by_phase.get(str(new), str(new)),
                      running.get("message") or f"phase {old or 'none'} -> {new}")]


def _trigger_annotation(body: dict[str, Any]) -> dict[str, Any] | None:
    """The lineage a DriftMonitor put on a retraining job (tailor.dev/trigger)."""
    text = (body["metadata"].get("annotations") or {}).get(c.ANNOTATION_TRIGGER)
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    fields = ("driftMonitor", "reason", "message", "windowStart", "windowEnd", "time",
              "productionData")
    if not isinstance(data, dict):
        return None
    lineage = {k: data[k] for k in fields if data.get(k) is not None}
    if not isinstance(lineage.get("productionData"), dict):
        lineage.pop("productionData", None)
    return lineage


def assess(body: dict[str, Any], spec: TrainingJobSpec, job: dict[str, Any] | None,
           pods: list[dict[str, Any]] | None, now: str) -> Decision:
    """Decide the next step for a TrainingJob. `pods` is needed only when `job` has finished
    (Complete or Failed); pass None otherwise and the decision asks for nothing about them."""
    s = _Status(body, spec, now)
    new = s.new
    attempt = int(new["workers"]["restarts"])
    conditions = new.get("conditions")
    if is_true(conditions, c.CONDITION_SUCCEEDED) or is_true(conditions, c.CONDITION_FAILED):
        return Decision("none", new, attempt)
    new.setdefault("runId", f"run-{body['metadata']['uid'][:8]}")
    if "triggeredBy" not in new:
        lineage = _trigger_annotation(body)
        if lineage:
            new["triggeredBy"] = lineage
    deleting = job is not None and bool(job["metadata"].get("deletionTimestamp"))
    deadline = spec.run_policy.active_deadline_seconds

    if spec.run_policy.suspend:
        s.counts(None)
        s.phase("Suspended", c.REASON_SUSPENDED,
                "suspended: the worker pods are stopped; checkpoints are kept", suspended=True)
        action: Action = "delete" if job is not None and not deleting else "none"
        return Decision(action, new, attempt, s.transition_events())

    if job is None:
        started = new.setdefault("startTime", now)
        remaining = None
        if deadline is not None:
            remaining = int(deadline - _seconds_between(started, now))
            if remaining <= 0:
                s.finish(False, c.REASON_DEADLINE_EXCEEDED,
                         f"the job ran longer than activeDeadlineSeconds ({deadline}s)")
                return Decision("none", new, attempt, s.transition_events(), None)
        s.counts(None)
        if attempt > 0 and s.old.get("phase") == "Restarting":
            s.phase("Restarting", c.REASON_RESTARTING, f"starting restart {attempt} of the "
                    f"worker group")
        else:
            reason = c.REASON_RESUMED if s.old.get("phase") == "Suspended" else c.REASON_CREATED
            s.phase("Pending", reason, f"created the worker group ({spec.workers} workers)")
        return Decision("create", new, attempt, s.transition_events(), remaining)

    if deleting:
        return Decision("none", new, attempt, s.transition_events())
    job_attempt = int(job["metadata"].get("annotations", {}).get(ANNOTATION_ATTEMPT, "0"))
    if job_attempt != attempt:
        # A worker group of an earlier attempt: stop it before starting this one.
        return Decision("delete", new, attempt, s.transition_events())

    s.counts(job)
    if _job_condition(job, "Complete"):
        if pods is None:
            return Decision("none", new, attempt)  # the controller fetches the pods first
        summary = _summary_of_success(pods)
        if summary is not None:
            _apply_summary(new, summary, spec.evaluation.metric, now)
        progress = new.get("progress")
        if progress and progress.get("totalSteps"):
            progress |= {"step": progress["totalSteps"], "percent": 100.0, "etaSeconds": 0,
                         "summary": "100%"}
        s.finish(True, c.REASON_COMPLETED, "all workers completed")
        return Decision("none", new, attempt, s.transition_events())

    failed = _job_condition(job, "Failed")
    if failed:
        if failed.get("reason") == "DeadlineExceeded":
            s.finish(False, c.REASON_DEADLINE_EXCEEDED,
                     f"the job ran longer than activeDeadlineSeconds ({deadline}s)")
            return Decision("none", new, attempt, s.transition_events())
        if pods is None:
            return Decision("none", new, attempt)
        failure = diagnose(pods)
        new["failure"] = {k: v for k, v in {
            "reason": failure.reason, "message": failure.message,
            "exitCode": failure.exit_code, "worker": failure.worker, "time": now}.items()
            if v is not None}
        if failure.permanent:
            s.finish(False, failure.reason if failure.reason != c.REASON_WORKER_FAILED
                     else c.REASON_PERMANENT_FAILURE,
                     f"worker {failure.worker} failed permanently (exit code "
                     f"{failure.exit_code}): {failure.message}")
            return Decision("none", new, attempt, s.transition_events())
        if attempt >= spec.run_policy.backoff_limit:
            s.finish(False, c.REASON_BACKOFF_LIMIT_EXCEEDED,
                     f"the worker group failed {attempt + 1} times (backoffLimit "
                     f"{spec.run_policy.backoff_limit}); last failure: {failure.reason}: "
                     f"{failure.message}")
            return Decision("none", new, attempt, s.transition_events())
        new["workers"]["restarts"] = attempt + 1
        s.phase("Restarting", c.REASON_RESTARTING,
                f"worker {failure.worker} failed ({failure.reason}); restarting all workers")
        return Decision("delete", new, attempt + 1, s.transition_events())

    if job.get("spec", {}).get("suspend"):
        s.phase("Pending", c.REASON_QUEUED, "waiting for the queue to admit the job")
    elif new["workers"]["ready"] >= spec.workers:
        s.phase("Running", c.REASON_WORKERS_RUNNING, f"all {spec.workers} workers are running",
                running=True)
    else:
        s.phase("Pending" if s.old.get("phase") != "Restarting" else "Restarting",
                c.REASON_WORKERS_STARTING,
                f"{new['workers']['ready']} of {spec.workers} workers are ready")
    return Decision("none", new, attempt, s.transition_events())
