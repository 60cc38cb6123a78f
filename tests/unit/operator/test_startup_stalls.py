"""Workers that cannot start (tailor.assess.startup and the lifecycle around it), on pods shaped
as a real kubelet reports them: Stalled while one waits for someone's help, cleared when they
start, and Failed with PendingDeadlineExceeded once runPolicy.pendingDeadlineSeconds passes."""

from __future__ import annotations

import copy
from typing import Any

import kubelet_pods as k
import pytest
from tailor.assess import startup
from tailor.assess.conditions import find
from tailor.assess.trainingjob import Decision, assess
from tailor_contract import constants as c
from tailor_contract.trainingjob import TrainingJobSpec

EARLY, NOW, LATE = "2026-01-01T00:00:05Z", "2026-01-01T00:01:00Z", "2026-01-01T00:10:00Z"


def spec(**run_policy: Any) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate({"task": "custom", "command": ["true"], "workers": 2,
                                           "runPolicy": run_policy})


SPEC = spec()


def body(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "j", "namespace": "ns", "uid": "abcdef0123", "generation": 1,
                         "resourceVersion": "1"}, "status": status or {}}


def created() -> dict[str, Any]:
    """The status the reconcile that created the worker group wrote."""
    first = assess(body(), SPEC, None, None, k.CREATED)
    return assess(body(first.status), SPEC, k.worker_job(active=0), None, k.CREATED).status


def cond(status: dict[str, Any], kind: str) -> tuple[str, str, str]:
    found = find(status["conditions"], kind)
    assert found is not None
    return found["status"], found["reason"], found["message"]


def stalled_on(reason: str, *, index: int = 0, init: bool = False) -> list[dict[str, Any]]:
    """Worker `index` stuck with the kubelet's `reason` (in its init container if `init`),
    the other worker waiting as it would meanwhile."""
    pods = []
    for i in range(2):
        if i != index:
            pods.append(k.pod(i, k.waiting("PodInitializing", "") if i else None,
                              init={"running": {"startedAt": k.CREATED}} if i else None))
        elif init:
            pods.append(k.pod(i, k.waiting("PodInitializing", ""), init=k.waiting(reason)))
        else:
            pods.append(k.pod(i, k.waiting(reason)))
    return pods


@pytest.mark.parametrize("reason", c.STUCK_WAITING_REASONS)
def test_each_kubelet_reason_that_needs_help_stalls_the_job(reason: str) -> None:
    decision = assess(body(created()), SPEC, k.worker_job(), stalled_on(reason), NOW)
    s = decision.status
    assert decision.action == "none" and s["phase"] == "Pending"
    status, why, message = cond(s, "Stalled")
    assert (status, why) == ("True", reason)
    assert "worker 0 (pod j-worker-0-x7k2q, container trainer)" in message
    assert k.WAITING[reason] in message
    assert "fails at 2026-01-01T00:10:00Z (runPolicy.pendingDeadlineSeconds 600s)" in message
    # kstatus reads Reconciling before Stalled: it must be False for Flux to see Failed.
    assert cond(s, "Reconciling")[:2] == ("False", reason)
    assert cond(s, "Failed")[0] == cond(s, "Ready")[0] == cond(s, "Running")[0] == "False"
    assert "failure" not in s and "completionTime" not in s
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", reason)]


def test_a_missing_secret_names_the_secret_the_kubelet_could_not_find() -> None:
    s = assess(body(created()), SPEC, k.worker_job(),
               stalled_on("CreateContainerConfigError", index=1), NOW).status
    status, why, message = cond(s, "Stalled")
    assert (status, why) == ("True", "CreateContainerConfigError")
    assert message.startswith("worker 1 (pod j-worker-1-x7k2q, container trainer): "
                              'secret "s3-credentials" not found; ')


def test_a_stuck_init_container_is_reported_with_its_name() -> None:
    s = assess(body(created()), SPEC, k.worker_job(),
               stalled_on("ImagePullBackOff", index=1, init=True), NOW).status
    assert "container wait-for-worker-0" in cond(s, "Stalled")[2]


def test_waiting_that_fixes_itself_is_not_stalled() -> None:
    """ContainerCreating (a pull in progress), PodInitializing (waiting for worker 0) and
    a pod the scheduler has not placed yet are progress, not a stall."""
    pods = [k.pod(0), k.pod(1, k.waiting("PodInitializing", ""),
                                init={"running": {"startedAt": k.CREATED}})]
    s = assess(body(created()), SPEC, k.worker_job(), pods, NOW).status
    assert cond(s, "Stalled")[0] == "False"
    assert cond(s, "Reconciling")[:2] == ("True", "WorkersStarting")
    fresh = k.unschedulable(1, since="2026-01-01T00:00:30Z")
    s = assess(body(created()), SPEC, k.worker_job(), [k.pod(0), fresh], NOW).status
    assert cond(s, "Stalled")[0] == "False"


def test_unschedulable_stalls_once_it_has_lasted_half_the_deadline() -> None:
    pods = [k.pod(0), k.unschedulable(1)]
    assert cond(assess(body(created()), spec(pendingDeadlineSeconds=600), k.worker_job(), pods,
                       "2026-01-01T00:04:59Z").status, "Stalled")[0] == "False"
    s = assess(body(created()), spec(pendingDeadlineSeconds=600), k.worker_job(), pods,
               "2026-01-01T00:05:00Z").status
    status, why, message = cond(s, "Stalled")
    assert (status, why) == ("True", "Unschedulable")
    assert message.startswith(f"worker 1 (pod j-worker-1-x7k2q) cannot be scheduled: "
                              f"{k.UNSCHEDULABLE}")
    assert startup.unschedulable_after(spec(pendingDeadlineSeconds=60)) == 30
    assert startup.unschedulable_after(spec(pendingDeadlineSeconds=0)) == 300


def test_an_unchanged_stall_writes_nothing_again_and_clears_when_the_workers_start() -> None:
    pods = stalled_on("ImagePullBackOff")
    first = assess(body(created()), SPEC, k.worker_job(), pods, NOW)
    again = assess(body(copy.deepcopy(first.status)), SPEC, k.worker_job(), pods,
                   "2026-01-01T00:01:10Z")
    assert again.status == first.status and again.events == []
    # The image appears: the kubelet's next attempt pulls it, and the workers start.
    started = assess(body(first.status), SPEC, k.worker_job(ready=2),
                     [k.running(0), k.running(1)], "2026-01-01T00:02:00Z").status
    assert cond(started, "Stalled")[0] == "False" and started["phase"] == "Running"
    assert cond(started, "Reconciling")[:2] == ("True", "WorkersRunning")
    # Or it is pulled while the others still start: no longer stalled, still starting.
    pulling = assess(body(first.status), SPEC, k.worker_job(), [k.pod(0), k.pod(1)],
                     "2026-01-01T00:02:00Z").status
    assert cond(pulling, "Stalled")[0] == "False"
    assert cond(pulling, "Reconciling")[:2] == ("True", "WorkersStarting")


def test_the_pending_deadline_fails_the_job_with_the_kubelets_reason_and_deletes_the_group(
        ) -> None:
    stalled = assess(body(created()), SPEC, k.worker_job(), stalled_on("ImagePullBackOff"),
                     NOW).status
    decision = assess(body(stalled), SPEC, k.worker_job(), stalled_on("ErrImagePull"), LATE)
    s = decision.status
    assert decision.action == "delete" and s["phase"] == "Failed"
    status, why, message = cond(s, "Failed")
    assert (status, why) == ("True", "PendingDeadlineExceeded")
    assert message.startswith("the workers did not all start within "
                              "runPolicy.pendingDeadlineSeconds (600s): worker 0 (pod ")
    assert s["failure"] == {"reason": "ErrImagePull", "worker": 0, "time": LATE,
                            "message": "worker 0 (pod j-worker-0-x7k2q, container trainer): "
                                       + k.ERR_IMAGE_PULL}
    assert cond(s, "Stalled")[:2] == ("True", "PendingDeadlineExceeded")
    assert cond(s, "Reconciling")[0] == "False" and s["completionTime"] == LATE
    assert cond(s, "Promoted")[:2] == ("False", "NotApplicable")
    assert [(e.type, e.reason) for e in decision.events] == [
        ("Warning", "PendingDeadlineExceeded")]
    # Once failed, the deleted group is not created again.
    assert assess(body(s), SPEC, None, None, LATE).action == "none"


def test_the_deadline_names_what_is_known_when_nothing_is_stuck() -> None:
    slow = assess(body(created()), SPEC, k.worker_job(ready=1), [k.running(0), k.pod(1)],
                  LATE).status
    assert slow["failure"]["reason"] == "PendingDeadlineExceeded"
    assert slow["failure"]["message"] == "1 of 2 workers were ready"
    no_pods = assess(body(created()), SPEC, k.worker_job(active=0), [], LATE).status
    assert no_pods["failure"]["message"].startswith("no worker pod exists")
    # An unschedulable pod is the cause at the deadline, however recent.
    late_pod = k.unschedulable(1, since="2026-01-01T00:09:50Z")
    assert assess(body(created()), SPEC, k.worker_job(), [k.pod(0), late_pod],
                  LATE).status["failure"]["reason"] == "Unschedulable"


def test_no_deadline_waits_for_ever_and_says_so() -> None:
    never = spec(pendingDeadlineSeconds=0)
    decision = assess(body(created()), never, k.worker_job(), stalled_on("ErrImageNeverPull"),
                      "2026-01-02T00:00:00Z")
    assert decision.action == "none" and decision.status["phase"] == "Pending"
    assert cond(decision.status, "Stalled")[2].endswith(
        "the job waits until it is fixed (runPolicy.pendingDeadlineSeconds is 0)")
    assert not startup.wants_pods(k.worker_job(), {}, never, EARLY)


def test_the_clock_restarts_with_each_group_and_when_a_worker_stops_being_ready() -> None:
    job = k.worker_job(start="2026-01-01T00:05:00Z")  # a restart's group, or Kueue's admission
    assert startup.waited(job, created(), "2026-01-01T00:06:00Z") == 60
    ran = assess(body(created()), SPEC, k.worker_job(ready=2), None, "2026-01-01T00:01:00Z")
    dropped = assess(body(ran.status), SPEC, k.worker_job(ready=1), None,
                     "2026-01-01T00:30:00Z").status
    assert dropped["phase"] == "Pending"
    assert startup.pending_since(k.worker_job(ready=1), dropped) == "2026-01-01T00:30:00Z"
    assert startup.waited(k.worker_job(start=None), {}, NOW) is not None  # creationTimestamp
    job_without_times: dict[str, Any] = {"metadata": {}, "spec": {}, "status": {}}
    assert startup.waited(job_without_times, {}, NOW) is None


def test_pods_are_read_only_while_a_group_is_slow_to_start() -> None:
    status = created()
    assert not startup.wants_pods(k.worker_job(), status, SPEC, EARLY)  # within the grace
    assert startup.wants_pods(k.worker_job(), status, SPEC, NOW)
    assert not startup.wants_pods(k.worker_job(ready=2), status, SPEC, NOW)
    assert not startup.wants_pods(k.worker_job(suspend=True), status, SPEC, NOW)  # queued
    assert not startup.wants_pods(None, status, SPEC, NOW)
    deleting = k.worker_job()
    deleting["metadata"]["deletionTimestamp"] = NOW
    assert not startup.wants_pods(deleting, status, SPEC, NOW)
    # A deadline shorter than the grace still gets its cause read.
    assert startup.wants_pods(k.worker_job(), status, spec(pendingDeadlineSeconds=3), EARLY)
    # Without pods (within the grace) nothing is known to be stuck.
    within = assess(body(status), SPEC, k.worker_job(), None, EARLY).status
    assert cond(within, "Reconciling")[:2] == ("True", "WorkersStarting")


def stalled_status() -> dict[str, Any]:
    return assess(body(created()), SPEC, k.worker_job(), stalled_on("ImagePullBackOff"),
                  NOW).status


@pytest.mark.parametrize(("state", "checked"), [
    ("starting, past the grace", True), ("starting, within the grace", False),
    ("stalled", True), ("running", False), ("queued", False), ("failed", False),
    ("invalid spec", False), ("deleting", False), ("searching", False), ("new", False)])
def test_the_periodic_check_reconciles_only_jobs_whose_workers_are_starting(
        state: str, checked: bool) -> None:
    start = created()
    bodies: dict[str, dict[str, Any]] = {
        "starting, past the grace": body(start),
        "starting, within the grace": body(start),
        "stalled": body(stalled_status()),
        "running": body(assess(body(start), SPEC, k.worker_job(ready=2), None, NOW).status),
        "queued": body(assess(body(start), SPEC, k.worker_job(suspend=True), None,
                              NOW).status),
        "failed": body(assess(body(stalled_status()), SPEC, k.worker_job(), [], LATE).status),
        "invalid spec": body({"conditions": [{"type": "Stalled", "status": "True",
                                              "reason": "InvalidSpec", "message": "",
                                              "lastTransitionTime": k.CREATED}]}),
        "deleting": body(start), "searching": body({**start, "tuning": {"state": "Searching"}}),
        "new": body(),
    }
    bodies["deleting"]["metadata"]["deletionTimestamp"] = NOW
    now = EARLY if state == "starting, within the grace" else NOW
    assert startup.needs_check(bodies[state], now) is checked


def test_a_decision_carries_the_stall_only_in_status() -> None:
    """The Stalled condition is the whole record of a stall: no failure, no restart."""
    decision: Decision = assess(body(created()), SPEC, k.worker_job(),
                                stalled_on("CreateContainerError"), NOW)
    assert decision.attempt == 0 and decision.status["workers"]["restarts"] == 0


def test_a_group_whose_first_workers_completed_is_running_not_starting() -> None:
    """Ranks may exit before rank 0 finishes evaluating: a completed worker has started, so
    neither the pending deadline nor the pods are asked about."""
    ran = assess(body(created()), SPEC, k.worker_job(ready=2), None, NOW).status
    finishing = k.worker_job(ready=1, active=1)
    finishing["status"]["succeeded"] = 1
    assert not startup.starting(finishing, SPEC)
    assert not startup.wants_pods(finishing, ran, SPEC, LATE)
    decision = assess(body(ran), SPEC, finishing, None, "2026-01-01T05:00:00Z")
    assert decision.action == "none" and decision.status["phase"] == "Running"
    assert cond(decision.status, "Running")[0] == "True"
    assert "1 completed" in cond(decision.status, "Running")[2]
