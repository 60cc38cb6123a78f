"""A failed worker group's cause, read from pods shaped as a real kubelet leaves them: the
memory cgroup's OOM kill, the kill after a grace period, an init container that gave up."""

from __future__ import annotations

from typing import Any

import kubelet_pods as k
from tailor.assess.conditions import find
from tailor.assess.trainingjob import assess, diagnose
from tailor_contract.trainer_api import TerminationSummary
from tailor_contract.trainingjob import TrainingJobSpec

NOW = "2026-01-01T00:03:00Z"
SPEC = TrainingJobSpec.model_validate({"task": "custom", "command": ["true"], "workers": 2,
                                       "runPolicy": {"backoffLimit": 1}})
FAILED_JOB = {"metadata": {"name": "j-worker", "uid": k.JOB_UID,
                           "annotations": {"tailor.dev/attempt": "0"}},
              "spec": {}, "status": {"failed": 1, "active": 0, "ready": 0, "conditions": [
                  {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
                  {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                   "message": "Job has reached the specified backoff limit"}]}}


def failed(index: int, state: dict[str, Any], **extra: Any) -> dict[str, Any]:
    pod = k.pod(index, state, phase="Failed", **extra)
    ready = find(pod["status"]["conditions"], "Ready")
    assert ready is not None
    ready["reason"] = "PodFailed"
    return pod


def body(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "j", "namespace": "ns", "uid": "abcdef0123", "generation": 1,
                         "resourceVersion": "1"}, "status": status or {}}


def test_the_memory_cgroups_oom_kill_is_oomkilled_with_exit_code_137() -> None:
    # What the probe saw: a 32 Mi pod that allocated more, reason OOMKilled, exit 137,
    # no termination message (the process had no chance to write one).
    pods = [failed(0, k.terminated(143, "Error", finished="2026-01-01T00:02:01Z")),
            failed(1, k.terminated(137, "OOMKilled", finished="2026-01-01T00:02:00Z"))]
    failure = diagnose(pods)
    assert (failure.reason, failure.exit_code, failure.worker) == ("OOMKilled", 137, 1)
    assert failure.message == "worker 1 exited with code 137" and not failure.permanent


def test_oomkilled_keeps_its_reason_whatever_message_the_pod_left() -> None:
    """The launcher's fallback summary (a child killed: it exits 137), or the log tail that
    FallbackToLogsOnError gives when nothing was written: the reason stays OOMKilled."""
    summary = TerminationSummary("Failed", "WorkerFailed",
                                 "training processes exited with [-9]; the pod exits 137")
    for message, expected in ((summary.to_message(), summary.message),
                              ("Killed\nRuntimeError: DataLoader worker (pid 42) is killed",
                               "Killed\nRuntimeError: DataLoader worker (pid 42) is killed")):
        failure = diagnose([failed(0, k.terminated(137, "OOMKilled", message))])
        assert (failure.reason, failure.message) == ("OOMKilled", expected)


def test_an_oom_kill_in_the_last_state_of_a_restarted_container_counts() -> None:
    """restartPolicy Never keeps the kill in `state`; were the container restarted, the
    kubelet would keep it in `lastState` while the new one waits."""
    pod = failed(0, k.waiting("CrashLoopBackOff", "back-off 10s restarting failed container"),
                 last=k.terminated(137, "OOMKilled"), restarts=1)
    assert diagnose([pod]).reason == "OOMKilled"


def test_an_oom_kill_restarts_the_group_then_fails_it_naming_oomkilled() -> None:
    pods = [failed(0, k.terminated(143, "Error", finished="2026-01-01T00:02:00Z")),
            failed(1, k.terminated(137, "OOMKilled", finished="2026-01-01T00:02:00Z"))]
    restart = assess(body(), SPEC, FAILED_JOB, pods, NOW)
    assert restart.action == "delete" and restart.status["failure"]["reason"] == "OOMKilled"
    assert [e.reason for e in restart.events] == ["Restarting"]
    assert "after OOMKilled" in restart.events[0].message
    again = {**FAILED_JOB, "metadata": {**FAILED_JOB["metadata"],
                                        "annotations": {"tailor.dev/attempt": "1"}}}
    final = assess(body(restart.status), SPEC, again, pods, NOW).status
    assert final["phase"] == "Failed"
    assert final["failure"] == {"reason": "OOMKilled", "message": "worker 1 exited with code 137",
                                "exitCode": 137, "worker": 1, "time": NOW}
    failed_condition = find(final["conditions"], "Failed") or {}
    assert failed_condition["reason"] == "BackoffLimitExceeded"
    assert "last failure: OOMKilled" in failed_condition["message"]


def test_a_worker_killed_after_its_grace_period_is_a_plain_failure() -> None:
    """A worker that ignored SIGTERM: the kubelet's SIGKILL after
    terminationGracePeriodSeconds ends it with 137 and reason Error, not OOMKilled."""
    failure = diagnose([failed(0, k.terminated(137, "Error"))])
    assert (failure.reason, failure.exit_code) == ("WorkerFailed", 137)


def test_an_init_container_that_gave_up_is_the_cause_not_a_missing_pod() -> None:
    """Worker 1 waits for worker 0's rendezvous port in an init container; if it gives up,
    its pod fails before the trainer ever ran, and the log tail says why."""
    gave_up = failed(1, k.waiting("PodInitializing", ""), init=k.terminated(
        1, "Error", "worker 0 never listened: [Errno 111] Connection refused"))
    failure = diagnose([gave_up])
    assert (failure.reason, failure.worker, failure.exit_code) == ("WorkerFailed", 1, 1)
    assert failure.message == "worker 0 never listened: [Errno 111] Connection refused"
