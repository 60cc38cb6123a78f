"""A pod's status as the kubelet reports it, computed from what the worker knows: pure.

The worker keeps one container status per container (`waiting`, `running` or `terminated`,
with restart counts and the last state) and turns them, with the pod's phase, into the status
it patches: conditions keep their lastTransitionTime until their value changes, and conditions
the kubelet does not own (a scheduler's, say) are carried over untouched.
"""

from __future__ import annotations

from tailor_devstack.nodeagent.api import JSON, now

OWN_CONDITIONS = {"PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"}


def waiting(container: JSON, old: JSON, reason: str, message: str = "") -> JSON:
    """A container status waiting for `reason`, keeping the restart count and last state."""
    return {
        "name": container["name"], "image": container.get("image", ""), "imageID": "",
        "ready": False, "started": False, "restartCount": old.get("restartCount", 0),
        "state": {"waiting": {"reason": reason, "message": message}},
        "lastState": old.get("lastState", {}),
    }


def running(container: JSON, old: JSON, *, pod_uid: str, restarts: int) -> JSON:
    """The status of a container run that has just started."""
    name = container["name"]
    return {
        "name": name, "image": container.get("image", ""), "imageID": "",
        "containerID": f"tailor://{pod_uid}/{name}/{restarts}",
        "ready": True, "started": True, "restartCount": restarts,
        "state": {"running": {"startedAt": now()}},
        "lastState": old.get("lastState", {}),
    }


def terminated(status: JSON, code: int, *, oom_killed: bool, message: str) -> JSON:
    """The fields that turn a running container's status into a terminated one."""
    reason = "OOMKilled" if oom_killed else ("Completed" if code == 0 else "Error")
    state: JSON = {"exitCode": code, "reason": reason,
                   "startedAt": status["state"].get("running", {}).get("startedAt", now()),
                   "finishedAt": now(), "containerID": status.get("containerID")}
    if code > 128:
        state["signal"] = code - 128
    if message:
        state["message"] = message
    return {"ready": False, "started": False, "state": {"terminated": state}}


def restarting(status: JSON, container_name: str, delay: float) -> JSON:
    """The fields of a container status in crash-loop back-off for `delay` seconds."""
    return {
        "lastState": status["state"],
        "restartCount": status.get("restartCount", 0) + 1,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message":
                              f"back-off {delay:.0f}s restarting failed container "
                              f"{container_name}"}},
    }


def _conditions(pod: JSON, statuses: dict[str, JSON], phase: str,
                sandbox_ready: bool) -> list[JSON]:
    spec = pod["spec"]
    mains = [c["name"] for c in spec["containers"]]
    inits = [c["name"] for c in spec.get("initContainers", []) or []]
    ready = all(statuses.get(n, {}).get("ready") for n in mains) and phase == "Running"
    initialized = all("terminated" in statuses.get(n, {}).get("state", {})
                      and statuses[n]["state"]["terminated"]["exitCode"] == 0 for n in inits)
    previous = {c["type"]: c for c in pod.get("status", {}).get("conditions", []) or []}

    def condition(kind: str, value: bool, why: str | None = None) -> JSON:
        status = "True" if value else "False"
        old = previous.get(kind)
        since = now() if old is None or old.get("status") != status \
            else old["lastTransitionTime"]
        result = {"type": kind, "status": status, "lastTransitionTime": since,
                  "lastProbeTime": None}
        if why and not value:
            result["reason"] = why
        return result

    return [
        *(c for t, c in previous.items() if t not in OWN_CONDITIONS),
        condition("PodReadyToStartContainers", sandbox_ready),
        condition("Initialized", initialized, "ContainersNotInitialized"),
        condition("ContainersReady", ready, "ContainersNotReady"),
        condition("Ready", ready, "ContainersNotReady" if phase == "Running" else
                  ("PodCompleted" if phase in ("Succeeded", "Failed") else None)),
    ]


def pod_status(pod: JSON, statuses: dict[str, JSON], phase: str, *, sandbox_ip: str | None,
               host_ip: str, reason: str | None = None, message: str | None = None) -> JSON:
    """The status to patch; `sandbox_ip` is None while the pod has no sandbox (network)."""
    spec = pod["spec"]
    mains = [c["name"] for c in spec["containers"]]
    inits = [c["name"] for c in spec.get("initContainers", []) or []]
    sandbox_ready = sandbox_ip is not None and phase in ("Pending", "Running")
    status: JSON = {
        "phase": phase, "conditions": _conditions(pod, statuses, phase, sandbox_ready),
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "startTime": pod.get("status", {}).get("startTime") or now(),
        "containerStatuses": [statuses[n] for n in mains if n in statuses],
        "initContainerStatuses": [statuses[n] for n in inits if n in statuses],
        "reason": reason, "message": message,
    }
    if sandbox_ip is not None:
        status |= {"podIP": sandbox_ip, "podIPs": [{"ip": sandbox_ip}]}
    return status


def comparable(status: JSON) -> JSON:
    """What decides whether a status is new: conditions without their timestamps."""
    result = {k: v for k, v in status.items() if k != "conditions"}
    result["conditions"] = [(c["type"], c["status"]) for c in status["conditions"]]
    return result
