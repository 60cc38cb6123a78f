"""The Job that promotes a run a person approved: `<job>-promote`.

With `promotion.policy: Manual` the trainer stops at the verdict AwaitingApproval. When the
TrainingJob is approved (tailor.dev/approve: <runId>, see tailor.assess.approval) the operator
runs this one-off Job from the trainer image: `python -m tailor_trainer.promote` checks that
the run still awaits approval and publishes it through the same code as the automatic path
(the production pointer, the MLflow registry alias). Running it in the trainer image, rather
than in the operator, keeps promotion in one place and the operator free of S3 writes to
model prefixes and of MLflow.

It gets what a worker gets (the image, the environment of `tailor_env`, S3 credentials by
Secret reference, MLflow settings, the user's variables, the pod hardening and placement),
except torchrun's wiring and GPUs: publishing copies objects and registers a version.
"""

from __future__ import annotations

from typing import Any

from tailor_contract.constants import COMPONENT_PROMOTE, LABEL_COMPONENT, LABEL_TRAININGJOB
from tailor_contract.names import promote_job_name
from tailor_contract.trainer_api import EXIT_PERMANENT, PROMOTE_COMMAND
from tailor_contract.trainingjob import TrainingJobSpec

from tailor.builders.trainingjob import (
    GPU_RESOURCE,
    JobRef,
    container_security,
    placement,
    pod_security,
    tailor_env,
)

BACKOFF_LIMIT = 2
"""Publishing is idempotent (one PUT of the pointer, the alias moved again), so the Job
controller may retry a transient failure (storage or MLflow unreachable) on its own."""
DEADLINE_SECONDS = 1800


def _resources(spec: TrainingJobSpec) -> dict[str, dict[str, str]] | None:
    """The worker's CPU and memory (the same model is read), without its GPUs."""
    if spec.resources is None:
        return None
    groups = spec.resources.model_dump(by_alias=True, exclude_none=True)
    kept = {group: {name: str(value) for name, value in values.items() if name != GPU_RESOURCE}
            for group, values in groups.items()}
    return {group: values for group, values in kept.items() if values} or None


def build_promote_job(spec: TrainingJobSpec, raw_spec: dict[str, Any], job: JobRef, *,
                      image: str) -> dict[str, Any]:
    """One pod, retried by the Job controller on a retryable failure; the trainer's
    permanent exit code (the run is not awaiting approval, say) fails it at once."""
    job_labels = {LABEL_TRAININGJOB: job.name, LABEL_COMPONENT: COMPONENT_PROMOTE}
    container: dict[str, Any] = {
        "name": "promote", "image": image, "command": list(PROMOTE_COMMAND),
        "env": tailor_env(spec, raw_spec, job, 0),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": container_security(),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    resources = _resources(spec)
    if resources is not None:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never", "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "securityContext": pod_security(), "enableServiceLinks": False,
    } | placement(spec)
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": promote_job_name(job.name), "namespace": job.namespace,
                     "labels": job_labels, "ownerReferences": [job.owner_reference()]},
        "spec": {
            "backoffLimit": BACKOFF_LIMIT, "activeDeadlineSeconds": DEADLINE_SECONDS,
            "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {
                "containerName": "promote", "operator": "In", "values": [EXIT_PERMANENT]}}]},
            "template": {"metadata": {"labels": job_labels}, "spec": pod_spec},
        },
    }
