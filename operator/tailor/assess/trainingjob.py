"""A TrainingJob's lifecycle as a pure function: what is observed -> what to do and what to say.

`assess` reads the TrainingJob, its parsed spec, its worker Job and (only once that Job has
finished) its pods, and returns the one action to take, the complete new status and the Events
of any transition. The controller applies it; an unchanged world yields an identical status,
so nothing is patched.

Conditions (documented in docs/api.md and docs/operator.md):
- Succeeded / Failed: terminal, as on a batch/v1 Job (Argo CD's Job-like health reads them);
- Running: every worker pod is ready; Suspended: spec.runPolicy.suspend is honoured (reason
  Suspended) or Kueue has not admitted the worker Job yet (reason Queued), as a batch/v1 Job
  waiting for Kueue is Suspended;
- Ready: True only once Succeeded; Reconciling: True while the job is in progress (also while
  queued, since it proceeds without anyone's help); Stalled: True when it cannot go on without
  someone's help: once Failed, and, not terminal, while a worker cannot start (the kubelet's
  reason, e.g. ImagePullBackOff; tailor.assess.startup), with Reconciling False meanwhile, so
  kstatus (and so Flux), which reads these three, says Failed until the worker starts;
- DataQualityPassed and Promoted: Unknown until the trainer reports the data-quality gate and
  the promotion verdict in its termination summary; a verdict AwaitingApproval then follows
  the approve/reject annotations (tailor.assess.approval), whose "promote" action runs the
  promote Job.
Every decision reads conditions; `phase` is written for humans and read by nothing here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from tailor_contract import clock, trainer_api
from tailor_contract import constants as c
from tailor_contract.trainingjob import TrainingJobSpec

from tailor.assess import approval, startup, tuning, workers
from tailor.assess.conditions import Event, find, is_true, reason_of
from tailor.assess.status import JobStatus, seconds_between
from tailor.assess.tuning import Observed, TrialStart
from tailor.assess.workers import Failure, diagnose, worker_index
from tailor.builders.trainingjob import ANNOTATION_ATTEMPT

__all__ = ["JOB_UID_LABEL", "Action", "Decision", "Event", "Failure", "assess", "diagnose",
           "job_essence", "job_finished", "seconds_between", "worker_index"]

Action = Literal["none", "create", "delete", "promote"]
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"


@dataclass
class Decision:
    action: Action
    status: dict[str, Any]
    attempt: int = 0
    events: list[Event] = field(default_factory=list)
    deadline_seconds: int | None = None  # for a created Job: what is left of the deadline
    trial_starts: list[TrialStart] = field(default_factory=list)
    """Trial groups to create, after the status that records their trials is written."""
    trial_deletes: list[dict[str, Any]] = field(default_factory=list)


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


def _user_suspended(status: dict[str, Any]) -> bool:
    """The last status said the job was suspended by its spec (not queued by Kueue)."""
    conditions = status.get("conditions")
    return is_true(conditions, c.CONDITION_SUSPENDED) and \
        reason_of(conditions, c.CONDITION_SUSPENDED) == c.REASON_SUSPENDED


def _awaiting_restart(status: dict[str, Any]) -> bool:
    """A restarted worker group has not run yet: a restart was counted, and neither Running
    nor Suspended has changed since the failure that caused it (a later suspend, queueing or
    run of the group changes one of them)."""
    failed_at = (status.get("failure") or {}).get("time")
    if not (status.get("workers") or {}).get("restarts") or not failed_at:
        return False
    conditions = status.get("conditions")
    if is_true(conditions, c.CONDITION_RUNNING) or is_true(conditions, c.CONDITION_SUSPENDED):
        return False
    since = [cond.get("lastTransitionTime") for kind in (c.CONDITION_RUNNING,
                                                         c.CONDITION_SUSPENDED)
             if (cond := find(conditions, kind)) is not None]
    return all(t and clock.parse(t) <= clock.parse(failed_at) for t in since)


def _remaining(spec: TrainingJobSpec, s: JobStatus) -> int | None:
    """Seconds left of activeDeadlineSeconds, counted from the job's start (recorded now if
    it has not started); None: no limit."""
    started = s.new.setdefault("startTime", s.now)
    deadline = spec.run_policy.active_deadline_seconds
    if deadline is None:
        return None
    return int(deadline - seconds_between(started, s.now))


def _search(s: JobStatus, spec: TrainingJobSpec, body: dict[str, Any], seen: Observed
            ) -> tuple[Decision | None, tuning.SearchStep]:
    """The search phase (tailor.assess.tuning): a decision while it runs or once it failed;
    None once it completed, and the final run follows."""
    remaining = _remaining(spec, s)
    stop = (c.REASON_DEADLINE_EXCEEDED, _deadline_message(spec)) \
        if remaining is not None and remaining <= 0 else None
    suspended = spec.run_policy.suspend
    step = tuning.assess_search(body, spec, seen, s.now, suspended=suspended, stop=stop)
    s.new["tuning"] = step.tuning
    s.counts(None)
    if step.completed:
        return None, step
    if step.failure is not None:
        s.finish(False, *step.failure)
        s.report([], finished=True)
    elif suspended:
        s.phase("Suspended", c.REASON_SUSPENDED, "suspended: the trials' worker groups are "
                "stopped; the search resumes where it was", suspended=True, reconciling=False)
    else:
        running = step.tuning.get("trialsRunning", 0)
        s.phase("Tuning", c.REASON_SEARCHING, f"searching: {step.tuning.get('summary')}, "
                f"{running} running", running=running > 0)
    return Decision("none", s.new, s.attempt, s.transition_events() + step.events,
                    remaining, trial_starts=step.starts, trial_deletes=step.deletes), step


def _deadline_message(spec: TrainingJobSpec) -> str:
    return (f"the job ran longer than activeDeadlineSeconds "
            f"({spec.run_policy.active_deadline_seconds}s)")


def _suspend(s: JobStatus, job: dict[str, Any] | None) -> Decision:
    s.counts(None)
    s.phase("Suspended", c.REASON_SUSPENDED,
            "suspended: the worker pods are stopped; checkpoints are kept", suspended=True,
            reconciling=False)
    deleting = job is not None and bool(job["metadata"].get("deletionTimestamp"))
    action: Action = "delete" if job is not None and not deleting else "none"
    return Decision(action, s.new, s.attempt, s.transition_events())


def _create(s: JobStatus, spec: TrainingJobSpec) -> Decision:
    """No worker Job: create the current attempt's, unless the deadline has passed."""
    remaining = _remaining(spec, s)
    if remaining is not None and remaining <= 0:
        s.finish(False, c.REASON_DEADLINE_EXCEEDED, _deadline_message(spec))
        s.report([], finished=True)
        return Decision("none", s.new, s.attempt, s.transition_events(), None)
    s.counts(None)
    if s.attempt > 0 and _awaiting_restart(s.old):
        s.phase("Restarting", c.REASON_RESTARTING,
                f"starting restart {s.attempt} of the worker group")
    else:
        reason = c.REASON_RESUMED if _user_suspended(s.old) else c.REASON_CREATED
        s.phase("Pending", reason, f"created the worker group ({spec.workers} workers)")
    return Decision("create", s.new, s.attempt, s.transition_events(), remaining)


def _succeeded(s: JobStatus, spec: TrainingJobSpec, pods: list[dict[str, Any]]) -> Decision:
    reports = workers.summaries(pods)
    workers.outcome(s.new, reports[0] if reports else None, spec.evaluation.metric, s.now)
    progress = s.new.get("progress")
    if progress and progress.get("totalSteps"):
        progress |= {"step": progress["totalSteps"], "percent": 100.0, "etaSeconds": 0,
                     "summary": "100%"}
    s.finish(True, c.REASON_COMPLETED, "all workers completed")
    s.report(reports, finished=True, succeeded=True)
    return Decision("none", s.new, s.attempt, s.transition_events())


def _failed(s: JobStatus, spec: TrainingJobSpec, pods: list[dict[str, Any]]) -> Decision:
    """The worker Job failed: fail the TrainingJob for good, or restart the whole group."""
    failure = diagnose(pods)
    s.new["failure"] = {k: v for k, v in {
        "reason": failure.reason, "message": failure.message, "exitCode": failure.exit_code,
        "worker": failure.worker, "time": s.now}.items() if v is not None}
    limit = spec.run_policy.backoff_limit
    if failure.permanent:
        s.finish(False, failure.reason if failure.reason != c.REASON_WORKER_FAILED
                 else c.REASON_PERMANENT_FAILURE,
                 f"worker {failure.worker} failed permanently (exit code "
                 f"{failure.exit_code}): {failure.message}")
    elif s.attempt >= limit:
        s.finish(False, c.REASON_BACKOFF_LIMIT_EXCEEDED,
                 f"the worker group failed {s.attempt + 1} times (backoffLimit {limit}); "
                 f"last failure: {failure.reason}: {failure.message}")
    else:
        s.new["workers"]["restarts"] = s.attempt + 1
        s.phase("Restarting", c.REASON_RESTARTING,
                f"worker {failure.worker} failed ({failure.reason}); restarting all workers")
        s.report(workers.summaries(pods), failure)
        return Decision("delete", s.new, s.attempt + 1, s.transition_events())
    s.report(workers.summaries(pods), failure, finished=True)
    return Decision("none", s.new, s.attempt, s.transition_events())


def _in_progress(s: JobStatus, spec: TrainingJobSpec, job: dict[str, Any],
                 pods: list[dict[str, Any]] | None) -> Decision:
    """The worker Job runs, or waits: for Kueue's admission, or for its pods to be ready."""
    ready = s.new["workers"]["ready"]
    if (job.get("spec") or {}).get("suspend"):
        s.phase("Suspended", c.REASON_QUEUED,
                "waiting for Kueue to admit the worker group (its Job is suspended until then)",
                suspended=True)
    elif ready >= spec.workers:
        s.phase("Running", c.REASON_WORKERS_RUNNING, f"all {spec.workers} workers are running",
                running=True)
    elif not startup.starting(job, spec):
        done = s.new["workers"]["succeeded"]
        s.phase("Running", c.REASON_WORKERS_RUNNING, f"all {spec.workers} workers started; "
                f"{done} completed, the others are finishing", running=True)
    else:
        return _starting(s, spec, job, pods)
    return Decision("none", s.new, s.attempt, s.transition_events())


def _starting(s: JobStatus, spec: TrainingJobSpec, job: dict[str, Any],
              pods: list[dict[str, Any]] | None) -> Decision:
    """Workers starting. `pods` (read once the group has been starting for a while) may show
    one that cannot start by itself: Stalled until it starts; past the pending deadline the
    job fails and the group is deleted. Without `pods` nothing is known to be stuck."""
    deadline = spec.run_policy.pending_deadline_seconds
    seconds = startup.waited(job, s.old, s.now)
    if deadline and seconds is not None and seconds >= deadline:
        return _pending_deadline_exceeded(s, spec, pods)
    phase = "Restarting" if _awaiting_restart(s.old) else "Pending"
    stuck = None if pods is None else startup.stuck(pods, s.now, startup.unschedulable_after(spec))
    if stuck is None:
        s.phase(phase, c.REASON_WORKERS_STARTING,
                f"{s.new['workers']['ready']} of {spec.workers} workers are ready")
        return Decision("none", s.new, s.attempt, s.transition_events())
    at = startup.deadline_at(job, s.old, spec)
    if not deadline:
        then = "the job waits until it is fixed (runPolicy.pendingDeadlineSeconds is 0)"
    else:  # the time, not what is left of it: the message stays the same at each check
        then = (f"the job fails at {at or 'its deadline'} (runPolicy.pendingDeadlineSeconds "
                f"{deadline}s) unless every worker has started by then")
    message = f"{stuck.message}; {then}"
    newly = not is_true(s.old.get("conditions"), c.CONDITION_STALLED)
    s.phase(phase, stuck.reason, message, stalled=True)
    events = [Event("Warning", stuck.reason, message)] if newly else s.transition_events()
    return Decision("none", s.new, s.attempt, events)


def _pending_deadline_exceeded(s: JobStatus, spec: TrainingJobSpec,
                               pods: list[dict[str, Any]] | None) -> Decision:
    """The workers did not all start in time: Failed, the cause (a stuck worker, in the
    kubelet's words, if one is seen) in status.failure, and the group deleted."""
    stuck = startup.stuck(pods or [], s.now, 0.0)
    ready = s.new["workers"]["ready"]
    if stuck is not None:
        cause = stuck.message
    elif pods is not None and not pods:
        cause = ("no worker pod exists: the Job's Events say why it could not create them "
                 "(a ResourceQuota or an admission webhook, say)")
    else:
        cause = f"{ready} of {spec.workers} workers were ready"
    s.new["failure"] = {k: v for k, v in {
        "reason": stuck.reason if stuck else c.REASON_PENDING_DEADLINE_EXCEEDED,
        "message": cause, "worker": stuck.worker if stuck else None, "time": s.now}.items()
        if v is not None}
    s.finish(False, c.REASON_PENDING_DEADLINE_EXCEEDED,
             f"the workers did not all start within runPolicy.pendingDeadlineSeconds "
             f"({spec.run_policy.pending_deadline_seconds}s): {cause}")
    s.report([], finished=True)
    return Decision("delete", s.new, s.attempt, s.transition_events())


def finished(body: dict[str, Any]) -> bool:
    """The TrainingJob has succeeded or failed for good (its status says so)."""
    conditions = (body.get("status") or {}).get("conditions")
    return is_true(conditions, c.CONDITION_SUCCEEDED) or is_true(conditions, c.CONDITION_FAILED)


def assess(body: dict[str, Any], spec: TrainingJobSpec, job: dict[str, Any] | None,
           pods: list[dict[str, Any]] | None, now: str, *,
           promote_job: dict[str, Any] | None = None,
           promote_pods: list[dict[str, Any]] | None = None,
           trials: Observed | None = None) -> Decision:
    """Decide the next step for a TrainingJob. `pods` is needed when `job` has finished
    (Complete or Failed), and read while its workers start once `startup.wants_pods` says so
    (a stuck worker is then Stalled); pass None otherwise.
    Once the job has finished, only manual approval remains: `promote_job` is its promote
    Job when `approval.wants_promote_job(body)` (and `promote_pods` that Job's pods once it
    finished). With spec.tuning the search comes first: `trials` is what was seen of its trial
    groups (tailor.assess.tuning), and the worker group is the final run's. `now` is an RFC
    3339 time (tailor_contract.clock)."""
    s = JobStatus(body, spec, now)
    if s.finished():
        meta = body["metadata"]
        after = approval.assess(meta["name"], meta["uid"], s.new, meta.get("annotations"),
                                promote_job, promote_pods, s.generation, now)
        return Decision("promote" if after.promote else "none", after.status, s.attempt,
                        after.events)
    s.new.setdefault("runId", trainer_api.run_id(body["metadata"]["uid"]))
    if "triggeredBy" not in s.new and (lineage := _trigger_annotation(body)):
        s.new["triggeredBy"] = lineage
    s.awaiting_report()
    if spec.tuning is not None and not tuning.search_done(s.old):
        searching, step = _search(s, spec, body, trials or Observed())
        if searching is not None:
            return searching
        decision = _after_search(s, spec, job, pods)
        decision.events[:0] = step.events
        decision.trial_deletes += step.deletes
        return decision
    return _after_search(s, spec, job, pods)


def _after_search(s: JobStatus, spec: TrainingJobSpec, job: dict[str, Any] | None,
                  pods: list[dict[str, Any]] | None) -> Decision:
    """The worker group's lifecycle: the job's only run, or a search's final run."""
    if spec.run_policy.suspend:
        return _suspend(s, job)
    if job is None:
        return _create(s, spec)
    if job["metadata"].get("deletionTimestamp"):
        return Decision("none", s.new, s.attempt, s.transition_events())
    if int((job["metadata"].get("annotations") or {}).get(ANNOTATION_ATTEMPT, "0")) != s.attempt:
        # A worker group of an earlier attempt: stop it before starting this one.
        return Decision("delete", s.new, s.attempt, s.transition_events())
    s.counts(job)
    if _job_condition(job, "Complete"):
        if pods is None:
            return Decision("none", s.new, s.attempt)  # the controller fetches the pods first
        return _succeeded(s, spec, pods)
    failed = _job_condition(job, "Failed")
    if failed and failed.get("reason") == "DeadlineExceeded":
        s.finish(False, c.REASON_DEADLINE_EXCEEDED, _deadline_message(spec))
        s.report([], finished=True)
        return Decision("none", s.new, s.attempt, s.transition_events())
    if failed:
        return Decision("none", s.new, s.attempt) if pods is None else _failed(s, spec, pods)
    return _in_progress(s, spec, job, pods)
