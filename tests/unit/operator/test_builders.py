from __future__ import annotations

from typing import Any

import pytest
from tailor.builders.trainingjob import (
    JobRef,
    build_service,
    build_worker_job,
    procs_per_worker,
    shm_size,
    trainer_command,
)
from tailor_contract import trainer_api
from tailor_contract.trainingjob import TrainingJobSpec

REF = JobRef("news", "ml", "0123456789abcdef")
TEXT_SPEC: dict[str, Any] = {
    "task": "text-classification",
    "model": {"base": "s3://models/minilm/"},
    "data": {"uri": "s3://data/news.csv", "columns": {"text": "text"}},
    "output": {"uri": "s3://runs/"},
    "workers": 2,
    "storage": {"endpoint": "http://minio:9000", "credentialsSecret": {"name": "s3"}},
    "tracking": {"uri": "http://mlflow:5000"},
}


def spec_of(raw: dict[str, Any]) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate(raw)


def worker_job(raw: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return build_worker_job(spec_of(raw), raw, REF, image="trainer:1", attempt=kwargs.get(
        "attempt", 0), deadline_seconds=kwargs.get("deadline"))


def env_of(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_names_and_ownership() -> None:
    service, job = build_service(REF), worker_job(TEXT_SPEC)
    assert service["metadata"]["name"] == "news"
    assert job["metadata"]["name"] == "news-worker"
    assert job["spec"]["template"]["spec"]["subdomain"] == "news"
    for obj in (service, job):
        [owner] = obj["metadata"]["ownerReferences"]
        assert owner["uid"] == REF.uid and owner["controller"] is True


def test_built_in_tasks_run_the_trainer_and_get_their_uris() -> None:
    job = worker_job(TEXT_SPEC, attempt=2)
    env = env_of(job)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        *trainer_api.LAUNCHER, "-m", "tailor_trainer"]
    assert env[trainer_api.ENV_MODEL_URI]["value"] == "s3://runs/news/"
    assert env[trainer_api.ENV_ARTIFACT_URI]["value"] == "s3://runs/news/runs/run-01234567/"
    assert env[trainer_api.ENV_RESTART_COUNT]["value"] == "2"
    assert env["PET_RDZV_ID"]["value"] == "run-01234567-2"
    assert env["MLFLOW_EXPERIMENT_NAME"]["value"] == "news"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3"
    assert job["metadata"]["annotations"]["tailor.dev/attempt"] == "2"


def test_custom_commands_run_under_the_launcher_without_python() -> None:
    raw = {"task": "custom", "command": ["python", "train.py"], "args": ["--lr", "1e-3"],
           "output": {"uri": "s3://runs/"}, "hyperparameters": {"epochs": 2}}
    assert trainer_command(spec_of(raw)) == [*trainer_api.LAUNCHER, "--no-python", "python",
                                             "train.py", "--lr", "1e-3"]
    env = env_of(worker_job(raw))
    assert env["TAILOR_CHECKPOINT_URI"]["value"] == "s3://runs/news/runs/run-01234567/checkpoints/"
    assert '"epochs":2' in env["TAILOR_HYPERPARAMETERS"]["value"]


def test_a_single_worker_needs_no_wait_for_worker_zero() -> None:
    raw = {**TEXT_SPEC, "workers": 1}
    assert worker_job(raw)["spec"]["template"]["spec"]["initContainers"] == []
    assert len(worker_job(TEXT_SPEC)["spec"]["template"]["spec"]["initContainers"]) == 1


@pytest.mark.parametrize(("resources", "procs", "expected"), [
    (None, "auto", "1"),
    ({"limits": {"nvidia.com/gpu": 4}}, "auto", "4"),
    ({"requests": {"nvidia.com/gpu": 2}}, "auto", "2"),
    ({"limits": {"nvidia.com/gpu": 4}}, 2, "2"),
])
def test_processes_per_worker(resources: dict[str, Any] | None, procs: Any,
                              expected: str) -> None:
    raw = {**TEXT_SPEC, "procsPerWorker": procs}
    if resources:
        raw["resources"] = resources
    assert env_of(worker_job(raw))["PET_NPROC_PER_NODE"]["value"] == expected


@pytest.mark.parametrize(("resources", "size"), [
    (None, "1Gi"),
    ({"limits": {"memory": "8Gi"}}, str(4 * 2**30)),
    ({"requests": {"memory": "3G"}}, str(1_500_000_000)),
    # Every legal quantity, as the API server parses it (the Kubernetes client's parser).
    ({"limits": {"memory": "1.5Gi"}}, str(3 * 2**28)),
    ({"limits": {"memory": "4Pi"}}, str(2 * 2**50)),
    ({"limits": {"memory": "128974848"}}, "64487424"),
    ({"limits": {"memory": 128974848}}, "64487424"),
    ({"limits": {"memory": "1e3"}}, "500"),
    ({"limits": {"memory": "1000m"}}, "1"),  # one byte: half rounds down, but never to 0
    ({"limits": {"memory": "3000m"}}, "1"),
    ({"limits": {"memory": "6Gi"}, "requests": {"memory": "1000m"}}, str(3 * 2**30)),
])
def test_shm_is_sized_from_memory(resources: dict[str, Any] | None, size: str) -> None:
    raw = {**TEXT_SPEC, **({"resources": resources} if resources else {})}
    assert shm_size(spec_of(raw)) == size
    job = worker_job(raw)
    [dshm] = [v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "dshm"]
    assert dshm["emptyDir"] == {"medium": "Memory", "sizeLimit": size}


@pytest.mark.parametrize(
    ("resources", "procs", "expected"),
    [
        (None, "auto", 1),
        ({"limits": {"nvidia.com/gpu": 4}}, "auto", 4),
        ({"requests": {"nvidia.com/gpu": "2", "cpu": "500m"}}, "auto", 2),
        ({"limits": {"nvidia.com/gpu": 4}}, 2, 2),
        ({"requests": {"cpu": 8}}, "auto", 1),
        ({"limits": {"nvidia.com/gpu": "2000m"}}, "auto", 2),  # a legal way to write 2
        ({"limits": {"nvidia.com/gpu": "1e1"}}, "auto", 10),
    ],
)
def test_procs_per_worker(resources: Any, procs: Any, expected: int) -> None:
    """Moved from tests/unit/api (the spec models no longer parse quantities)."""
    raw: dict[str, Any] = {"task": "custom", "command": ["python", "-c", "print(1)"],
                           "procsPerWorker": procs}
    if resources is not None:
        raw["resources"] = resources
    assert procs_per_worker(spec_of(raw)) == expected


def test_deadline_and_queue() -> None:
    raw = {**TEXT_SPEC, "scheduling": {"queueName": "gpu-queue"}}
    job = worker_job(raw, deadline=120)
    assert job["spec"]["activeDeadlineSeconds"] == 120
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert worker_job(TEXT_SPEC)["spec"]["suspend"] is False


def test_no_credential_value_is_ever_in_the_job() -> None:
    job = worker_job(TEXT_SPEC)
    for variable in env_of(job).values():
        if variable["name"].startswith("AWS_") and "KEY" in variable["name"]:
            assert "value" not in variable


def test_operator_defaults_fill_only_what_a_job_leaves_out() -> None:
    from tailor.builders.trainingjob import with_operator_defaults

    defaults = {"s3_endpoint": "http://minio:9000", "s3_region": "eu-1",
                "tracking_uri": "http://mlflow:5000"}
    bare = {"task": "text-classification"}
    filled = with_operator_defaults(bare, **defaults)
    assert filled["storage"] == {"endpoint": "http://minio:9000", "region": "eu-1"}
    assert filled["tracking"] == {"uri": "http://mlflow:5000"}
    assert bare == {"task": "text-classification"}  # the input is not changed
    own = with_operator_defaults(TEXT_SPEC, **defaults)
    assert own["storage"] == TEXT_SPEC["storage"]
    assert own["tracking"] == TEXT_SPEC["tracking"]
    mine = with_operator_defaults({**TEXT_SPEC, "storage": {"endpoint": "http://s3.mine"}},
                                  **defaults)
    assert mine["storage"] == {"endpoint": "http://s3.mine"}
    assert "tracking" not in with_operator_defaults({"task": "custom"}, **defaults)


@pytest.mark.parametrize(("pending", "timeout"), [
    (None, 660),  # the default deadline, 600 s, plus a minute
    (0, 600), (30, 600), (3600, 3660)])
def test_workers_wait_for_each_other_past_the_pending_deadline(pending: int | None,
                                                                 timeout: int) -> None:
    """A worker that never starts must fail the job as PendingDeadlineExceeded (its cause
    named), not as a waiting worker giving up first (a restart, the cause hidden)."""
    raw = dict(TEXT_SPEC)
    if pending is not None:
        raw["runPolicy"] = {"pendingDeadlineSeconds": pending}
    job = worker_job(raw)
    assert f"join_timeout={timeout}," in env_of(job)["PET_RDZV_CONF"]["value"]
    [wait] = job["spec"]["template"]["spec"]["initContainers"]
    assert f"deadline=time.monotonic()+{timeout}\n" in wait["command"][-1]
