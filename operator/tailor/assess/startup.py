"""A worker group that does not start: pure readings of its Job and pods while it starts.

A batch/v1 Job says nothing while its pods wait: a pod in ImagePullBackOff leaves the Job's
counts (active 1, ready 0) as they were, so no Job event comes. The controller therefore reads
the pods of a group that has been starting for STARTUP_GRACE_SECONDS (most groups start sooner
and cost no read), on every reconcile and from a loop that reconciles starting jobs every
--progress-interval, and these functions say whether a worker is stuck and whether
spec.runPolicy.pendingDeadlineSeconds has passed.

Stuck means the kubelet waits with a reason that no retry of its own clears
(`tailor_contract.constants.STUCK_WAITING_REASONS`: a missing image or Secret, a bad image
name), or the scheduler has found no node for a while (`unschedulable_after`: that one may still
clear by itself, when a node is added or another job ends).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from tailor_contract import clock
from tailor_contract import constants as c
from tailor_contract.trainingjob import TrainingJobSpec

from tailor.assess.conditions import find, is_true
from tailor.assess.status import seconds_between
from tailor.assess.workers import worker_index

STARTUP_GRACE_SECONDS = 10.0
UNSCHEDULABLE_STALL_SECONDS = 300.0
MESSAGE_LIMIT = 1024
POD_SCHEDULED = "PodScheduled"


@dataclass(frozen=True)
class Stuck:
    """A worker that cannot start: the kubelet's (or scheduler's) reason, and its words."""

    reason: str
    message: str
    worker: int


def pending_since(job: dict[str, Any], status: dict[str, Any]) -> str | None:
    """When the group's pending clock started: the Job's start (the Job controller sets it
    again when Kueue admits a suspended Job), or later, when the Running condition turned
    False after a worker stopped being ready. None while the Job has no start yet, and while
    `status` (the last one written) still says Running: the clock starts with this change."""
    start = (job.get("status") or {}).get("startTime") or \
        (job.get("metadata") or {}).get("creationTimestamp")
    running = find(status.get("conditions"), c.CONDITION_RUNNING)
    if not start or (running is not None and running.get("status") == "True"):
        return None
    since = (running or {}).get("lastTransitionTime")
    if running is not None and running.get("status") == "False" and since and \
            clock.parse(since) > clock.parse(start):
        return str(since)
    return str(start)


def waited(job: dict[str, Any], status: dict[str, Any], now: str) -> float | None:
    """Seconds the group has been starting; None when that is not known yet."""
    since = pending_since(job, status)
    return None if since is None else seconds_between(since, now)


def deadline_at(job: dict[str, Any], status: dict[str, Any], spec: TrainingJobSpec
                ) -> str | None:
    """When the pending deadline passes (RFC 3339); None without one."""
    since, deadline = pending_since(job, status), spec.run_policy.pending_deadline_seconds
    if since is None or not deadline:
        return None
    return clock.format(clock.parse(since) + datetime.timedelta(seconds=deadline))


def starting(job: dict[str, Any], spec: TrainingJobSpec) -> bool:
    """The group is meant to run (not waiting for Kueue, not being deleted) and some worker
    has not started yet: fewer are ready or already completed than the spec asks for."""
    if (job.get("metadata") or {}).get("deletionTimestamp") or (job.get("spec") or {}).get(
            "suspend"):
        return False
    status = job.get("status") or {}
    started = int(status.get("ready", 0) or 0) + int(status.get("succeeded", 0) or 0)
    return started < spec.workers


def wants_pods(job: dict[str, Any] | None, status: dict[str, Any], spec: TrainingJobSpec,
               now: str) -> bool:
    """Whether a reconcile should read the pods of a group that is still starting: once it has
    been starting for the grace, or its deadline has passed (to name the cause)."""
    if job is None or not starting(job, spec):
        return False
    seconds = waited(job, status, now)
    deadline = spec.run_policy.pending_deadline_seconds
    return seconds is not None and (seconds >= STARTUP_GRACE_SECONDS or
                                    0 < deadline <= seconds)


def unschedulable_after(spec: TrainingJobSpec) -> float:
    """How long a pod may wait for a node before that counts as stuck: half the pending
    deadline, and 5 minutes at most (a cluster autoscaler usually adds a node within that)."""
    deadline = spec.run_policy.pending_deadline_seconds
    return min(UNSCHEDULABLE_STALL_SECONDS, deadline / 2) if deadline else \
        UNSCHEDULABLE_STALL_SECONDS


def _waiting(pod: dict[str, Any]) -> tuple[str, str, str] | None:
    """(container, reason, message) of the first container the kubelet cannot start; init
    containers first, since the kubelet starts them first."""
    status = pod.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in c.STUCK_WAITING_REASONS:
                return (str(container.get("name", "?")), str(waiting["reason"]),
                        str(waiting.get("message") or ""))
    return None


def _unschedulable(pod: dict[str, Any], now: str, after: float) -> str | None:
    """The scheduler's message for a pod it has found no node for since at least `after`
    seconds ago; None otherwise."""
    scheduled = find((pod.get("status") or {}).get("conditions"), POD_SCHEDULED)
    if scheduled is None or scheduled.get("status") != "False" or \
            scheduled.get("reason") != c.REASON_UNSCHEDULABLE:
        return None
    since = scheduled.get("lastTransitionTime")
    if since and seconds_between(since, now) < after:
        return None
    return str(scheduled.get("message") or "no node fits the pod")


def stuck(pods: list[dict[str, Any]], now: str, unschedulable_for: float) -> Stuck | None:
    """The first worker (by index) that cannot start, in the kubelet's or scheduler's words."""
    for pod in sorted(pods, key=worker_index):
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        index, name = worker_index(pod), meta.get("name", "?")
        waiting = _waiting(pod)
        if waiting is not None:
            container, reason, message = waiting
            text = f"worker {index} (pod {name}, container {container}): {message or reason}"
            return Stuck(reason, text[:MESSAGE_LIMIT], index)
        why = _unschedulable(pod, now, unschedulable_for)
        if why is not None:
            text = f"worker {index} (pod {name}) cannot be scheduled: {why}"
            return Stuck(c.REASON_UNSCHEDULABLE, text[:MESSAGE_LIMIT], index)
    return None


def needs_check(body: dict[str, Any], now: str) -> bool:
    """Whether the periodic check should reconcile this TrainingJob: its status says its worker
    group is starting (or stalled) and has been for the grace. Running, queued, suspended,
    finished and searching jobs, and specs that do not parse, are skipped at no cost."""
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return False
    status = body.get("status") or {}
    conditions = status.get("conditions")
    if any(is_true(conditions, kind) for kind in (c.CONDITION_RUNNING, c.CONDITION_SUSPENDED,
                                                   c.CONDITION_SUCCEEDED, c.CONDITION_FAILED)):
        return False
    if (status.get("tuning") or {}).get("state") == c.SEARCH_SEARCHING:
        return False
    stalled = find(conditions, c.CONDITION_STALLED)
    if stalled is not None and stalled.get("status") == "True":
        return stalled.get("reason") != c.REASON_INVALID_SPEC
    if not is_true(conditions, c.CONDITION_RECONCILING):
        return False
    since = (find(conditions, c.CONDITION_RUNNING) or {}).get("lastTransitionTime")
    return not since or seconds_between(since, now) >= STARTUP_GRACE_SECONDS
