"""The children of a TrainingJob: a headless Service and an Indexed Job of torchrun workers.

Pure functions of the parsed spec; the controller applies what they return. Worker `i` of a
job named `x` is pod `x-worker-<i>-<random>` with host name `x-worker-<i>`; the headless
Service `x` gives it the stable name `x-worker-<i>.x.<namespace>.svc.cluster.local`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from kubernetes.utils import parse_quantity
from tailor_contract import names, trainer_api
from tailor_contract.constants import (
    API_VERSION,
    COMPONENT_SERVICE,
    COMPONENT_TRIAL,
    COMPONENT_WORKERS,
    LABEL_COMPONENT,
    LABEL_TRAININGJOB,
    LABEL_TRIAL,
    TRAININGJOB_KIND,
)
from tailor_contract.trainingjob import TASK_CUSTOM, TrainingJobSpec

ANNOTATION_ATTEMPT = "tailor.dev/attempt"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
RENDEZVOUS_TIMEOUT_SECONDS = 600
DEFAULT_SHM = "1Gi"
TRAINER_UID = 10001  # the trainer image's user (trainer-image/Dockerfile)
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class JobRef:
    """Identity of the TrainingJob the children belong to, and of the worker group: the job's
    own (`trial` None) or trial `trial`'s of its search."""

    name: str
    namespace: str
    uid: str
    trial: int | None = None

    @property
    def run_id(self) -> str:
        """One run per TrainingJob object: stable across restarts, new if re-created; a trial's
        is its own, under the job's."""
        job_run = trainer_api.run_id(self.uid)
        return job_run if self.trial is None else trainer_api.trial_run_id(job_run, self.trial)

    @property
    def group(self) -> str:
        """The worker group's Service; its Job too for a trial."""
        if self.trial is None:
            return names.service_name(self.name)
        return names.trial_group_name(self.name, self.trial)

    @property
    def job_name(self) -> str:
        return names.worker_job_name(self.name) if self.trial is None else self.group

    def hostname(self, index: int) -> str:
        if self.trial is None:
            return names.worker_hostname(self.name, index)
        return names.trial_hostname(self.name, self.trial, index)

    def owner_reference(self) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": TRAININGJOB_KIND, "name": self.name,
                "uid": self.uid, "controller": True, "blockOwnerDeletion": True}


def labels(job: JobRef, component: str) -> dict[str, str]:
    """A child's labels; a trial's pods (component workers) are labelled as the trial's."""
    if job.trial is not None:
        return {LABEL_TRAININGJOB: job.name, LABEL_COMPONENT: COMPONENT_TRIAL,
                LABEL_TRIAL: str(job.trial)}
    return {LABEL_TRAININGJOB: job.name, LABEL_COMPONENT: component}


def master_address(job: JobRef) -> str:
    return f"{job.hostname(0)}.{job.group}.{job.namespace}.svc.cluster.local"


def model_uri(spec: TrainingJobSpec, job: JobRef) -> str:
    if spec.output is None:
        return ""
    return f"{spec.output.uri.rstrip('/')}/{spec.model_name(job.name)}/"


def artifact_uri(spec: TrainingJobSpec, job: JobRef) -> str:
    """`<output>/<model>/runs/<run id>/`, beside the model's test manifest and production copy;
    a trial's is `trials/<n>/` inside its job's."""
    base = model_uri(spec, job)
    if not base:
        return ""
    run = f"{base}runs/{trainer_api.run_id(job.uid)}/"
    return run if job.trial is None else trainer_api.trial_artifact_uri(run, job.trial)


def with_operator_defaults(raw_spec: dict[str, Any], *, s3_endpoint: str | None,
                           s3_region: str | None, tracking_uri: str | None) -> dict[str, Any]:
    """The spec with the operator's cluster-wide defaults filled in where the job names none:
    the S3 endpoint (and its region) and the MLflow tracking server."""
    spec = dict(raw_spec)
    storage = dict(spec.get("storage") or {})
    if s3_endpoint and not storage.get("endpoint"):
        storage["endpoint"] = s3_endpoint
        if s3_region:
            storage["region"] = s3_region
        spec["storage"] = storage
    if tracking_uri and not spec.get("tracking") and spec.get("task") != TASK_CUSTOM:
        spec["tracking"] = {"uri": tracking_uri}
    return spec


def build_service(job: JobRef) -> dict[str, Any]:
    """Headless, and publishing not-ready addresses: workers must resolve each other before
    they are ready, since rendezvous is what makes them ready."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": job.group, "namespace": job.namespace,
                     "labels": labels(job, COMPONENT_SERVICE),
                     "ownerReferences": [job.owner_reference()]},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": labels(job, COMPONENT_WORKERS),
                 "ports": [{"name": "rendezvous", "port": trainer_api.RENDEZVOUS_PORT},
                           {"name": "metrics", "port": trainer_api.METRICS_PORT}]},
    }


def _resource(spec: TrainingJobSpec, name: str) -> Decimal | None:
    """A resource of each worker pod, limit before request, parsed as the API server parses
    quantities (`1000m`, `1.5Gi`, `4Pi`, `1e3`, `128974848` are all legal)."""
    resources = spec.resources
    for group in (resources.limits, resources.requests) if resources else ():
        if group and name in group:
            value: Decimal = parse_quantity(group[name])  # type: ignore[no-untyped-call]
            return value
    return None


def shm_size(spec: TrainingJobSpec) -> str:
    """/dev/shm: half the worker's memory (limit, else request), in whole bytes, at least
    one (a size of 0 would mean no limit at all); 1Gi without either."""
    memory = _resource(spec, "memory")
    if memory is None:
        return DEFAULT_SHM
    return str(max(1, int((memory / 2).to_integral_value(rounding=ROUND_FLOOR))))


def gpus_per_worker(spec: TrainingJobSpec) -> int:
    """GPUs each worker pod asks for (nvidia.com/gpu in limits, else in requests); an
    extended resource is a whole number, which `2` and `2000m` both are."""
    gpus = _resource(spec, GPU_RESOURCE)
    return 0 if gpus is None else int(gpus)


def procs_per_worker(spec: TrainingJobSpec) -> int:
    """torchrun's --nproc-per-node: `auto` is one per GPU requested, or one without GPUs."""
    if spec.procs_per_worker == "auto":
        return max(1, gpus_per_worker(spec))
    return spec.procs_per_worker


def trainer_command(spec: TrainingJobSpec) -> list[str]:
    """The worker container's command: the trainer's launcher wraps torchrun, which reads its
    options from the PET_* environment, and maps the trainer's exit codes through."""
    if spec.task == TASK_CUSTOM:
        assert spec.command is not None
        return [*trainer_api.LAUNCHER, "--no-python", *spec.command, *(spec.args or [])]
    return [*trainer_api.LAUNCHER, "-m", "tailor_trainer"]


def rendezvous_timeout(spec: TrainingJobSpec) -> int:
    """Seconds a worker waits for the others (torchrun's join timeout, and the wait for
    worker 0): 600, or a minute beyond the pending deadline, so that a worker that never
    starts fails the job as PendingDeadlineExceeded, naming its cause, rather than as a
    waiting worker giving up (which would count a restart and hide the cause)."""
    pending = spec.run_policy.pending_deadline_seconds
    return max(RENDEZVOUS_TIMEOUT_SECONDS, pending + 60 if pending else 0)


def torchrun_env(spec: TrainingJobSpec, job: JobRef, attempt: int) -> list[dict[str, Any]]:
    master = master_address(job)
    return [
        {"name": "PET_NNODES", "value": str(spec.workers)},
        {"name": "PET_NPROC_PER_NODE", "value": str(procs_per_worker(spec))},
        {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.labels['{INDEX_LABEL}']"}}},
        {"name": "PET_MASTER_ADDR", "value": master},
        {"name": "PET_MASTER_PORT", "value": str(trainer_api.MASTER_PORT)},
        {"name": "PET_RDZV_BACKEND", "value": "c10d"},
        {"name": "PET_RDZV_ENDPOINT", "value": f"{master}:{trainer_api.RENDEZVOUS_PORT}"},
        {"name": "PET_RDZV_ID", "value": f"{job.run_id}-{attempt}"},
        {"name": "PET_RDZV_CONF",
         "value": f"join_timeout={rendezvous_timeout(spec)},read_timeout=120"},
        # A failed worker fails the pod; the operator restarts the whole group together.
        {"name": "PET_MAX_RESTARTS", "value": "0"},
        {"name": "NCCL_DEBUG", "value": "WARN"},
        {"name": "NCCL_SOCKET_IFNAME", "value": "eth0"},
        {"name": "TORCH_NCCL_ASYNC_ERROR_HANDLING", "value": "1"},
        {"name": "OMP_NUM_THREADS", "value": "1"},
    ]


def tailor_env(spec: TrainingJobSpec, raw_spec: dict[str, Any], job: JobRef,
               attempt: int) -> list[dict[str, Any]]:
    """What the trainer reads (trainer_api.py), S3 credentials only by Secret reference."""
    handed = {"apiVersion": API_VERSION, "kind": TRAININGJOB_KIND,
              "metadata": {"name": job.name, "namespace": job.namespace, "uid": job.uid},
              "spec": raw_spec}
    run_uri = artifact_uri(spec, job)
    env: list[dict[str, Any]] = [
        {"name": trainer_api.ENV_TRAININGJOB, "value": json.dumps(handed, separators=(",", ":"))},
        {"name": trainer_api.ENV_RUN_ID, "value": job.run_id},
        {"name": trainer_api.ENV_ARTIFACT_URI, "value": run_uri},
        {"name": trainer_api.ENV_MODEL_URI, "value": model_uri(spec, job)},
        {"name": trainer_api.ENV_METRICS_PORT, "value": str(trainer_api.METRICS_PORT)},
        {"name": trainer_api.ENV_RESTART_COUNT, "value": str(attempt)},
        {"name": "AWS_DEFAULT_REGION", "value": spec.storage.region},
        {"name": "HOME", "value": "/tmp"},
    ]
    if spec.storage.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": spec.storage.endpoint})
    secret = spec.storage.credentials_secret
    if secret is not None:
        for variable, key in (("AWS_ACCESS_KEY_ID", secret.access_key_id_key),
                              ("AWS_SECRET_ACCESS_KEY", secret.secret_access_key_key)):
            env.append({"name": variable, "valueFrom": {"secretKeyRef": {
                "name": secret.name, "key": key}}})
    if spec.task == TASK_CUSTOM:
        # What the trainer's own custom path would give a user command (docs/trainer.md).
        if run_uri:
            env.append({"name": "TAILOR_CHECKPOINT_URI",
                        "value": f"{run_uri}{trainer_api.ARTIFACT_CHECKPOINTS_DIR}/"})
        env.append({"name": "TAILOR_HYPERPARAMETERS", "value": json.dumps(
            spec.hyperparameters.model_dump(by_alias=True, exclude_none=True),
            separators=(",", ":"))})
        env.append({"name": "TAILOR_WORK_DIR", "value": "/tmp/work"})
    if spec.tracking is not None:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": spec.tracking.uri})
        env.append({"name": "MLFLOW_EXPERIMENT_NAME",
                    "value": spec.tracking.experiment or spec.model_name(job.name)})
    for user_variable in spec.env or []:
        env.append({"name": user_variable.name, "value": user_variable.value})
    return env


def _wait_for_worker_zero(image: str, timeout: int) -> dict[str, Any]:
    """Workers other than 0 start only once worker 0's rendezvous port accepts connections:
    its DNS record alone appears before torchrun listens there."""
    script = (
        "import os,socket,sys,time\n"
        "if os.environ.get('JOB_COMPLETION_INDEX','0')=='0': sys.exit(0)\n"
        "host,port=os.environ['PET_RDZV_ENDPOINT'].rsplit(':',1)\n"
        f"deadline=time.monotonic()+{timeout}\n"
        "while True:\n"
        "    try:\n"
        "        socket.create_connection((host,int(port)),timeout=2).close(); break\n"
        "    except OSError as error:\n"
        "        if time.monotonic()>deadline: sys.exit(f'worker 0 never listened: {error}')\n"
        "        time.sleep(0.5)\n"
    )
    return {"name": "wait-for-worker-0", "image": image, "command": ["python", "-c", script],
            "env": [{"name": "PET_RDZV_ENDPOINT", "value": "$(PET_RDZV_ENDPOINT)"}],
            "securityContext": container_security(),
            "terminationMessagePolicy": "FallbackToLogsOnError"}


def container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}


def pod_security() -> dict[str, Any]:
    """The trainer image's non-root user, and the runtime's default seccomp profile."""
    return {"runAsNonRoot": True, "runAsUser": TRAINER_UID, "runAsGroup": TRAINER_UID,
            "fsGroup": TRAINER_UID, "seccompProfile": {"type": "RuntimeDefault"}}


def _trainer_container(spec: TrainingJobSpec, env: list[dict[str, Any]], image: str
                       ) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "trainer", "image": image, "command": trainer_command(spec), "env": env,
        "ports": [{"name": "rendezvous", "containerPort": trainer_api.RENDEZVOUS_PORT},
                  {"name": "metrics", "containerPort": trainer_api.METRICS_PORT}],
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": container_security(),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.resources is not None:
        container["resources"] = {  # quantities are strings in the API (`1`, `500m`, `2Gi`)
            group: {name: str(value) for name, value in values.items()}
            for group, values in spec.resources.model_dump(by_alias=True,
                                                           exclude_none=True).items()}
    return container


def _pod_spec(spec: TrainingJobSpec, job: JobRef, env: list[dict[str, Any]], image: str
              ) -> dict[str, Any]:
    init = _wait_for_worker_zero(image, rendezvous_timeout(spec))
    init["env"] = [e for e in env if e["name"] == "PET_RDZV_ENDPOINT"]
    pod_spec: dict[str, Any] = {
        "subdomain": job.group,
        "restartPolicy": "Never",
        "initContainers": [init] if spec.workers > 1 else [],
        "containers": [_trainer_container(spec, env, image)],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size(spec)}},
            {"name": "tmp", "emptyDir": {}},
        ],
        "securityContext": pod_security(),
        "enableServiceLinks": False,
    }
    return pod_spec | placement(spec)


def placement(spec: TrainingJobSpec) -> dict[str, Any]:
    """Where the pods may run: priority class, node selector, tolerations, affinity."""
    scheduling = spec.scheduling
    if scheduling is None:
        return {}
    optional = {"priorityClassName": scheduling.priority_class_name,
                "nodeSelector": scheduling.node_selector,
                "tolerations": [t.model_dump(by_alias=True, exclude_none=True)
                                for t in scheduling.tolerations or []] or None,
                "affinity": scheduling.affinity}
    return {k: v for k, v in optional.items() if v}


def build_worker_job(spec: TrainingJobSpec, raw_spec: dict[str, Any], job: JobRef, *,
                     image: str, attempt: int, deadline_seconds: int | None,
                     extra_env: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The Indexed Job of one attempt: any failed pod fails it (backoffLimit 0) and the
    operator decides whether the whole group restarts. `extra_env` is what a trial or the
    final run of a search adds (builders/tuning.py)."""
    pod_labels = labels(job, COMPONENT_WORKERS)
    job_labels = dict(pod_labels)
    queue = spec.scheduling.queue_name if spec.scheduling is not None else None
    if queue:
        job_labels[KUEUE_QUEUE_LABEL] = queue
    env = torchrun_env(spec, job, attempt) + tailor_env(spec, raw_spec, job, attempt) + \
        list(extra_env)
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed", "completions": spec.workers, "parallelism": spec.workers,
        "backoffLimit": 0,
        # Kueue admits a queued job by unsuspending it.
        "suspend": bool(queue),
        "template": {"metadata": {"labels": pod_labels},
                     "spec": _pod_spec(spec, job, env, image)},
    }
    if deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = max(1, deadline_seconds)
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job.job_name, "namespace": job.namespace,
                     "labels": job_labels, "annotations": {ANNOTATION_ATTEMPT: str(attempt)},
                     "ownerReferences": [job.owner_reference()]},
        "spec": job_spec,
    }
