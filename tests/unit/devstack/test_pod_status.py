"""The pod status the node agent publishes, computed without an API server."""

from __future__ import annotations

from typing import Any

from tailor_devstack.nodeagent import pod_status

CONTAINER = {"name": "main", "image": "unused", "command": ["x"]}
INIT = {"name": "setup", "image": "unused", "command": ["y"]}
OLD_TIME = "2020-01-01T00:00:00Z"


def pod(conditions: list[dict[str, Any]] | None = None, *, init: bool = False
        ) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [CONTAINER]}
    if init:
        spec["initContainers"] = [INIT]
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"}, "spec": spec,
            "status": {"conditions": conditions or [], "startTime": OLD_TIME}}


def by_type(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_a_running_ready_pod() -> None:
    statuses = {"main": pod_status.running(CONTAINER, {}, pod_uid="u-1", restarts=0)}
    status = pod_status.pod_status(pod(), statuses, "Running", sandbox_ip="198.18.0.5",
                                   host_ip="198.18.0.1")
    assert {t: c["status"] for t, c in by_type(status).items()} == {
        "PodReadyToStartContainers": "True", "Initialized": "True", "ContainersReady": "True",
        "Ready": "True"}
    assert status["podIP"] == "198.18.0.5"
    assert status["podIPs"] == [{"ip": "198.18.0.5"}]
    assert status["hostIPs"] == [{"ip": "198.18.0.1"}]
    assert status["startTime"] == OLD_TIME
    [main] = status["containerStatuses"]
    assert main["containerID"] == "tailor://u-1/main/0"
    assert "running" in main["state"]


def test_conditions_keep_their_transition_time_and_foreign_ones_stay() -> None:
    previous = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": OLD_TIME},
                {"type": "Ready", "status": "False", "lastTransitionTime": OLD_TIME},
                {"type": "Initialized", "status": "False", "lastTransitionTime": OLD_TIME}]
    statuses = {"main": pod_status.waiting(CONTAINER, {}, "PodInitializing")}
    status = pod_status.pod_status(pod(previous), statuses, "Pending", sandbox_ip=None,
                                   host_ip="198.18.0.1")
    conditions = by_type(status)
    assert conditions["PodScheduled"] == previous[0]
    assert conditions["Ready"]["lastTransitionTime"] == OLD_TIME  # still False
    assert conditions["Initialized"]["status"] == "True"  # no init containers
    assert conditions["Initialized"]["lastTransitionTime"] != OLD_TIME
    assert conditions["PodReadyToStartContainers"]["status"] == "False"
    assert "podIP" not in status


def test_not_ready_reasons_follow_the_phase() -> None:
    waiting = {"main": pod_status.waiting(CONTAINER, {}, "CrashLoopBackOff")}
    running = pod_status.pod_status(pod(), waiting, "Running", sandbox_ip="198.18.0.5",
                                    host_ip="198.18.0.1")
    assert by_type(running)["Ready"]["reason"] == "ContainersNotReady"
    done = pod_status.pod_status(pod(), waiting, "Succeeded", sandbox_ip=None,
                                 host_ip="198.18.0.1", reason="R", message="M")
    assert by_type(done)["Ready"]["reason"] == "PodCompleted"
    assert by_type(done)["PodReadyToStartContainers"]["status"] == "False"
    assert (done["reason"], done["message"]) == ("R", "M")
    pending = pod_status.pod_status(pod(), waiting, "Pending", sandbox_ip=None,
                                    host_ip="198.18.0.1")
    assert "reason" not in by_type(pending)["Ready"]


def test_init_containers_count_once_they_succeed() -> None:
    statuses = {"setup": pod_status.running(INIT, {}, pod_uid="u-1", restarts=0),
                "main": pod_status.waiting(CONTAINER, {}, "PodInitializing")}
    status = pod_status.pod_status(pod(init=True), statuses, "Pending", sandbox_ip="198.18.0.5",
                                   host_ip="198.18.0.1")
    assert by_type(status)["Initialized"]["reason"] == "ContainersNotInitialized"
    assert [s["name"] for s in status["initContainerStatuses"]] == ["setup"]
    statuses["setup"] |= pod_status.terminated(statuses["setup"], 0, oom_killed=False,
                                               message="")
    status = pod_status.pod_status(pod(init=True), statuses, "Pending", sandbox_ip="198.18.0.5",
                                   host_ip="198.18.0.1")
    assert by_type(status)["Initialized"]["status"] == "True"


def test_terminated_states() -> None:
    running = pod_status.running(CONTAINER, {}, pod_uid="u-1", restarts=2)
    started = running["state"]["running"]["startedAt"]
    ok = pod_status.terminated(running, 0, oom_killed=False, message="")["state"]["terminated"]
    assert (ok["reason"], ok["exitCode"], ok["startedAt"]) == ("Completed", 0, started)
    assert ok["containerID"] == "tailor://u-1/main/2"
    assert "signal" not in ok and "message" not in ok
    failed = pod_status.terminated(running, 3, oom_killed=False, message="bad data")
    assert failed["state"]["terminated"]["reason"] == "Error"
    assert failed["state"]["terminated"]["message"] == "bad data"
    assert (failed["ready"], failed["started"]) == (False, False)
    oom = pod_status.terminated(running, 137, oom_killed=True, message="")["state"]["terminated"]
    assert (oom["reason"], oom["signal"]) == ("OOMKilled", 9)


def test_a_restart_keeps_the_last_state_and_counts() -> None:
    status = pod_status.running(CONTAINER, {}, pod_uid="u-1", restarts=0)
    status |= pod_status.terminated(status, 1, oom_killed=False, message="")
    last = status["state"]
    status |= pod_status.restarting(status, "main", 2.0)
    assert status["lastState"] == last
    assert status["restartCount"] == 1
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert "back-off 2s restarting failed container main" in status["state"]["waiting"]["message"]
    again = pod_status.waiting(CONTAINER, status, "CreateContainerConfigError", "no secret")
    assert (again["restartCount"], again["lastState"]) == (1, last)


def test_comparable_ignores_condition_timestamps() -> None:
    statuses = {"main": pod_status.running(CONTAINER, {}, pod_uid="u-1", restarts=0)}
    first = pod_status.pod_status(pod(), statuses, "Running", sandbox_ip="198.18.0.5",
                                  host_ip="198.18.0.1")
    second = {**first, "conditions": [c | {"lastTransitionTime": OLD_TIME}
                                      for c in first["conditions"]]}
    assert pod_status.comparable(first) == pod_status.comparable(second)
    failed = pod_status.pod_status(pod(), statuses, "Failed", sandbox_ip="198.18.0.5",
                                   host_ip="198.18.0.1")
    assert pod_status.comparable(failed) != pod_status.comparable(first)
