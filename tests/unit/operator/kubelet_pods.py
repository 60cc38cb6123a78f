"""Worker pods as a real kubelet (v1.36, containerd) reports them, for the pure tests of
failure classification: the fields, reasons and messages are the kubelet's and scheduler's
own (pkg/kubelet/images, pkg/kubelet/kuberuntime, the scheduler's PodScheduled condition)."""

from __future__ import annotations

import copy
from typing import Any

JOB_UID = "5b0c1f7e-2a44-4c1e-9d0b-0f6f3a9e1c22"
IMAGE = "registry.tailor.test/tailor-trainer:missing"
CREATED = "2026-01-01T00:00:00Z"

ERR_IMAGE_PULL = (
    f'failed to pull and unpack image "{IMAGE}": failed to resolve reference "{IMAGE}": '
    'failed to do request: Head "https://registry.tailor.test/v2/tailor-trainer/manifests/'
    'missing": dial tcp: lookup registry.tailor.test: no such host')
WAITING = {
    "ErrImagePull": ERR_IMAGE_PULL,
    "ImagePullBackOff": f'Back-off pulling image "{IMAGE}": ErrImagePull: {ERR_IMAGE_PULL}',
    "ErrImageNeverPull": f'Container image "{IMAGE}" is not present with pull policy of Never',
    "InvalidImageName": ('Failed to apply default image tag "Tailor Trainer": couldn\'t parse '
                         'image name "Tailor Trainer": invalid reference format'),
    "ImageInspectError": f'Failed to inspect image "{IMAGE}": rpc error: code = Unknown',
    "CreateContainerConfigError": 'secret "s3-credentials" not found',
    "CreateContainerError": ('failed to generate container "3f1c" spec: failed to apply OCI '
                             'options: no such file or directory'),
}
UNSCHEDULABLE = ("0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are "
                 "available: 1 No preemption victims found for incoming pod.")


def _container(name: str, state: dict[str, Any], *, image: str = IMAGE, ready: bool = False,
               last: dict[str, Any] | None = None, restarts: int = 0) -> dict[str, Any]:
    return {"name": name, "image": image, "imageID": "", "ready": ready,
            "restartCount": restarts, "started": "running" in state,
            "state": state, "lastState": last or {}}


def waiting(reason: str, message: str | None = None) -> dict[str, Any]:
    text = WAITING.get(reason, "") if message is None else message
    return {"waiting": {"reason": reason, **({"message": text} if text else {})}}


def terminated(code: int, reason: str, message: str = "",
               finished: str = "2026-01-01T00:02:00Z") -> dict[str, Any]:
    state: dict[str, Any] = {"containerID": "containerd://9a7e4c", "exitCode": code,
                             "reason": reason, "startedAt": "2026-01-01T00:00:05Z",
                             "finishedAt": finished}
    if message:
        state["message"] = message
    return {"terminated": state}


def pod(index: int, trainer: dict[str, Any] | None = None, *, phase: str = "Pending",
        init: dict[str, Any] | None = None, scheduled: dict[str, Any] | None = None,
        last: dict[str, Any] | None = None, restarts: int = 0, job: str = "j"
        ) -> dict[str, Any]:
    """Worker `index` of TrainingJob `job`, its trainer container in state `trainer`
    (`init`: the wait-for-worker-0 init container's state, for workers other than 0)."""
    labels = {"batch.kubernetes.io/controller-uid": JOB_UID,
              "batch.kubernetes.io/job-name": f"{job}-worker",
              "batch.kubernetes.io/job-completion-index": str(index),
              "controller-uid": JOB_UID, "job-name": f"{job}-worker",
              "tailor.dev/component": "workers", "tailor.dev/trainingjob": job}
    conditions = [
        {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": None,
         "lastTransitionTime": "2026-01-01T00:00:02Z"},
        {"type": "Initialized", "status": "True" if init is None else "False",
         "lastProbeTime": None, "lastTransitionTime": CREATED},
        {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
         "message": "containers with unready status: [trainer]", "lastProbeTime": None,
         "lastTransitionTime": CREATED},
        {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady",
         "message": "containers with unready status: [trainer]", "lastProbeTime": None,
         "lastTransitionTime": CREATED},
        scheduled or {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                      "lastTransitionTime": CREATED},
    ]
    status: dict[str, Any] = {"phase": phase, "conditions": conditions, "qosClass": "Burstable"}
    if scheduled is None or scheduled.get("status") == "True":
        status |= {"hostIP": "198.18.0.2", "podIP": f"10.244.0.{10 + index}",
                   "startTime": CREATED}
        status["containerStatuses"] = [_container(
            "trainer", trainer or waiting("ContainerCreating", ""), last=last,
            restarts=restarts)]
        if init is not None:
            status["initContainerStatuses"] = [_container("wait-for-worker-0", init)]
    else:
        conditions[:] = [scheduled]
    spec = {"restartPolicy": "Never", "hostname": f"{job}-worker-{index}", "subdomain": job,
            "terminationGracePeriodSeconds": 30}
    if scheduled is None:
        spec["nodeName"] = "tailor-node"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{job}-worker-{index}-x7k2q", "namespace": "ns",
                         "uid": f"pod-{index}", "labels": labels,
                         "creationTimestamp": CREATED},
            "spec": spec, "status": status}


def unschedulable(index: int, since: str = CREATED) -> dict[str, Any]:
    return pod(index, scheduled={"type": "PodScheduled", "status": "False",
                                 "reason": "Unschedulable", "message": UNSCHEDULABLE,
                                 "lastProbeTime": None, "lastTransitionTime": since})


def running(index: int) -> dict[str, Any]:
    ready = pod(index, {"running": {"startedAt": "2026-01-01T00:00:05Z"}}, phase="Running")
    for condition in ready["status"]["conditions"]:
        if condition["type"] in ("Ready", "ContainersReady"):
            condition.update(status="True")
            condition.pop("reason")
            condition.pop("message")
    ready["status"]["containerStatuses"][0]["ready"] = True
    return ready


def worker_job(*, ready: int = 0, active: int = 2, start: str | None = CREATED,
               attempt: int = 0, suspend: bool = False) -> dict[str, Any]:
    """The worker Job as the Job controller keeps it while its pods start."""
    status: dict[str, Any] = {"active": active, "ready": ready, "terminating": 0,
                              "uncountedTerminatedPods": {}}
    if start:
        status["startTime"] = start
    return copy.deepcopy({
        "metadata": {"name": "j-worker", "namespace": "ns", "uid": JOB_UID,
                     "creationTimestamp": CREATED,
                     "annotations": {"tailor.dev/attempt": str(attempt)}},
        "spec": {"suspend": suspend}, "status": status})
