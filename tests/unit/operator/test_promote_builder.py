"""The promote Job a manual approval starts (`tailor.builders.promote`): a worker's image,
environment, hardening and placement, the trainer's promote module, no torchrun and no GPU."""

from __future__ import annotations

from typing import Any

from tailor.builders.promote import build_promote_job
from tailor.builders.trainingjob import JobRef, build_worker_job
from tailor_contract import constants as c
from tailor_contract import trainer_api
from tailor_contract.names import promote_job_name
from tailor_contract.trainingjob import TrainingJobSpec

REF = JobRef("news", "ml", "0123456789abcdef")
RAW: dict[str, Any] = {
    "task": "text-classification",
    "model": {"base": "s3://models/minilm/"},
    "data": {"uri": "s3://data/news.csv", "columns": {"text": "text"}},
    "output": {"uri": "s3://runs/"},
    "workers": 3,
    "storage": {"endpoint": "http://minio:9000", "credentialsSecret": {"name": "s3"}},
    "tracking": {"uri": "http://mlflow:5000", "experiment": "news"},
    "promotion": {"policy": "Manual"},
    "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
    "resources": {"requests": {"cpu": "2", "memory": "4Gi"},
                  "limits": {"memory": "8Gi", "nvidia.com/gpu": 1}},
    "scheduling": {"queueName": "team-a", "nodeSelector": {"pool": "training"},
                   "tolerations": [{"key": "gpu", "operator": "Exists"}]},
}


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def test_the_promote_job_runs_the_promote_module_with_a_workers_settings() -> None:
    spec = TrainingJobSpec.model_validate(RAW)
    job = build_promote_job(spec, RAW, REF, image="trainer:1")
    worker = build_worker_job(spec, RAW, REF, image="trainer:1", attempt=0,
                              deadline_seconds=None)
    assert job["metadata"]["name"] == promote_job_name("news") == "news-promote"
    assert job["metadata"]["namespace"] == "ml"
    assert job["metadata"]["ownerReferences"] == worker["metadata"]["ownerReferences"]
    labels = {c.LABEL_TRAININGJOB: "news", c.LABEL_COMPONENT: "promote"}
    assert job["metadata"]["labels"] == labels == job["spec"]["template"]["metadata"]["labels"]
    [container] = pod_spec(job)["containers"]
    [trainer] = pod_spec(worker)["containers"]
    assert container["image"] == "trainer:1"
    assert container["command"] == list(trainer_api.PROMOTE_COMMAND) == [
        "python", "-m", "tailor_trainer.promote"]
    # The same environment as a worker (the spec, run id, URIs, S3 by Secret reference,
    # MLflow, the user's variables), without torchrun's wiring.
    torchrun = {e["name"] for e in trainer["env"] if e["name"].startswith(("PET_", "NCCL_",
                                                                           "TORCH_", "OMP_"))}
    assert container["env"] == [e for e in trainer["env"] if e["name"] not in torchrun]
    env = {e["name"]: e for e in container["env"]}
    assert env[trainer_api.ENV_RUN_ID]["value"] == "run-01234567"
    assert env[trainer_api.ENV_MODEL_URI]["value"] == "s3://runs/news/"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3"
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"
    assert env["HF_HUB_OFFLINE"]["value"] == "1"
    # Hardened as a worker, placed as one, but without GPUs and outside Kueue's queue.
    assert container["securityContext"] == trainer["securityContext"]
    assert pod_spec(job)["securityContext"] == pod_spec(worker)["securityContext"]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"},
                                      "limits": {"memory": "8Gi"}}
    for key in ("nodeSelector", "tolerations"):
        assert pod_spec(job)[key] == pod_spec(worker)[key]
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_a_permanent_exit_fails_the_promote_job_at_once_and_others_are_retried() -> None:
    spec = TrainingJobSpec.model_validate({**RAW, "resources": None, "scheduling": None})
    job = build_promote_job(spec, RAW, REF, image="trainer:1")
    assert job["spec"]["backoffLimit"] == 2 and job["spec"]["activeDeadlineSeconds"] > 0
    [rule] = job["spec"]["podFailurePolicy"]["rules"]
    assert rule == {"action": "FailJob", "onExitCodes": {
        "containerName": "promote", "operator": "In", "values": [trainer_api.EXIT_PERMANENT]}}
    [container] = pod_spec(job)["containers"]
    assert "resources" not in container and "nodeSelector" not in pod_spec(job)


def test_gpus_alone_leave_no_resources() -> None:
    raw = {**RAW, "resources": {"limits": {"nvidia.com/gpu": 2}}}
    job = build_promote_job(TrainingJobSpec.model_validate(raw), raw, REF, image="t")
    assert "resources" not in pod_spec(job)["containers"][0]
