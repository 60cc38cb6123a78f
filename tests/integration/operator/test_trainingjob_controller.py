"""The TrainingJob controller on the real control plane and node, used through kubectl."""

from __future__ import annotations

import json
import os
import re
import signal
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from tailor_contract import trainer_api

from tests.support.testing import OperatorProcess, StackHandle, eventually
from tests.support.trainingjobs import condition, get, pods_of, status, wait_condition

# A small distributed program in the shape of a training run: rank 0 serves the trainer's
# progress metrics, every step all-reduces across all processes, and rank 0 writes the
# termination summary. STEP_SECONDS paces it so tests can watch it run.
PROGRAM = textwrap.dedent("""
    import os, sys, time
    import torch, torch.distributed as dist
    from prometheus_client import Gauge, start_http_server
    from tailor_contract import trainer_api

    steps = int(os.environ.get("STEPS", "8"))
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if os.environ.get("EXIT_CODE"):
        sys.exit(int(os.environ["EXIT_CODE"]))
    if rank == 0:
        start_http_server(int(os.environ[trainer_api.ENV_METRICS_PORT]))
        gauges = {name: Gauge(name, name) for name in (
            trainer_api.METRIC_STEP, trainer_api.METRIC_TOTAL_STEPS, trainer_api.METRIC_EPOCH,
            trainer_api.METRIC_SAMPLES_PER_SECOND, trainer_api.METRIC_ETA_SECONDS)}
        gauges[trainer_api.METRIC_TOTAL_STEPS].set(steps)
    for step in range(1, steps + 1):
        value = torch.tensor([float(rank + 1)])
        dist.all_reduce(value)
        assert value.item() == world * (world + 1) / 2, value
        if rank == 0:
            gauges[trainer_api.METRIC_STEP].set(step)
            gauges[trainer_api.METRIC_EPOCH].set(step / steps)
            gauges[trainer_api.METRIC_SAMPLES_PER_SECOND].set(32.0)
            gauges[trainer_api.METRIC_ETA_SECONDS].set((steps - step) * 0.5)
        # The simulated training step's own duration (work inside the pod, not a wait for a
        # condition): long enough for the operator to scrape progress mid-run.
        time.sleep(float(os.environ.get("STEP_SECONDS", "0.5")))
    if rank == 0:
        summary = trainer_api.TerminationSummary(
            "Succeeded", reason="Completed", message=f"all-reduce over {world} processes",
            metrics={"test": 0.875, "validation": 0.9})
        with open("/dev/termination-log", "w") as f:
            f.write(summary.to_message())
    print(f"rank {rank}/{world} done", flush=True)
    dist.destroy_process_group()
""")


def trainingjob(name: str, *, workers: int = 2, env: dict[str, str] | None = None,
                run_policy: dict[str, Any] | None = None, marker: str = "",
                extra: dict[str, Any] | None = None) -> str:
    spec: dict[str, Any] = {
        "task": "custom", "workers": workers, "procsPerWorker": 1,
        "command": ["python", "-c", PROGRAM, marker or name],
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        "runPolicy": {"backoffLimit": 2, **(run_policy or {})},
        **(extra or {}),
    }
    return json.dumps({"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
                       "metadata": {"name": name}, "spec": spec})


def done_lines(stack: StackHandle, namespace: str, name: str) -> list[str]:
    """The `rank r/n done` lines the workers printed. torchrun logs its own warnings around
    them, also after the program ends (a peer whose rendezvous host has already exited warns
    that it could not shut the rendezvous down)."""
    lines = []
    for pod in pods_of(stack, namespace, name):
        log = stack.kubectl("logs", pod["metadata"]["name"], "-n", namespace).stdout
        lines += [x for x in log.splitlines() if re.fullmatch(r"rank \d+/\d+ done", x)]
    return sorted(lines)


def apply(stack: StackHandle, namespace: str, manifest: str) -> None:
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)


def events(stack: StackHandle, namespace: str, name: str) -> list[str]:
    items = json.loads(stack.kubectl(
        "get", "events", "-n", namespace, "--field-selector",
        f"involvedObject.name={name},involvedObject.kind=TrainingJob", "-o", "json").stdout)
    return [e["reason"] for e in sorted(items["items"], key=lambda e: e["lastTimestamp"])]


def test_apply_creates_a_headless_service_and_an_indexed_job_of_torchrun_workers(
        stack: StackHandle, namespace: str, operator: OperatorProcess) -> None:
    stack.kubectl("create", "secret", "generic", "s3", "-n", namespace,
                  "--from-literal=AWS_ACCESS_KEY_ID=id", "--from-literal=AWS_SECRET_ACCESS_KEY=k")
    extra = {
        "image": "registry.example/trainer:1.2", "procsPerWorker": "auto",
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                      "limits": {"memory": "4Gi", "nvidia.com/gpu": 1}},
        "storage": {"endpoint": "http://minio.storage:9000",
                    "credentialsSecret": {"name": "s3"}},
        # Kueue queues the job: it is created suspended, so no pod starts here.
        "scheduling": {"queueName": "team-a", "priorityClassName": "training",
                       "nodeSelector": {"gpu": "h100"},
                       "tolerations": [{"key": "gpu", "operator": "Exists",
                                        "effect": "NoSchedule"}]},
    }
    apply(stack, namespace, trainingjob("shape", workers=3, extra=extra))
    job = eventually(lambda: get(stack, namespace, "job", "shape-worker"), timeout=30,
                     what="the worker Job")
    service = get(stack, namespace, "service", "shape")
    tj = get(stack, namespace, "tj", "shape")
    owner = {"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob", "name": "shape",
             "uid": tj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["metadata"]["ownerReferences"] == [owner]
    assert job["metadata"]["ownerReferences"] == [owner]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is True
    assert (job["spec"]["completionMode"], job["spec"]["completions"],
            job["spec"]["parallelism"], job["spec"]["backoffLimit"]) == ("Indexed", 3, 3, 0)
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"]["tailor.dev/trainingjob"] == "shape"
    assert pod["metadata"]["labels"]["tailor.dev/component"] == "workers"
    assert pod["spec"]["subdomain"] == "shape"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["priorityClassName"] == "training"
    assert pod["spec"]["nodeSelector"] == {"gpu": "h100"}
    assert pod["spec"]["tolerations"][0]["key"] == "gpu"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    [trainer] = pod["spec"]["containers"]
    assert trainer["image"] == "registry.example/trainer:1.2"
    assert trainer["command"][: len(trainer_api.LAUNCHER) + 1] == [*trainer_api.LAUNCHER, "--no-python"]
    assert trainer["securityContext"]["readOnlyRootFilesystem"] is True
    assert trainer["securityContext"]["allowPrivilegeEscalation"] is False
    assert trainer["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e for e in trainer["env"]}
    master = f"shape-worker-0.shape.{namespace}.svc.cluster.local"
    assert env["PET_NNODES"]["value"] == "3"
    assert env["PET_NPROC_PER_NODE"]["value"] == "1"  # auto: one per requested GPU
    assert env["PET_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['batch.kubernetes.io/job-completion-index']"
    assert env["PET_MASTER_ADDR"]["value"] == master
    assert env["PET_RDZV_BACKEND"]["value"] == "c10d"
    assert env["PET_RDZV_ENDPOINT"]["value"] == f"{master}:{trainer_api.RENDEZVOUS_PORT}"
    assert "join_timeout=" in env["PET_RDZV_CONF"]["value"]
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://minio.storage:9000"
    handed = json.loads(env[trainer_api.ENV_TRAININGJOB]["value"])
    assert handed["metadata"]["name"] == "shape" and handed["spec"]["workers"] == 3
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": str(2 * 2**30)}
    [wait] = pod["spec"]["initContainers"]
    assert wait["name"] == "wait-for-worker-0"
    # The queued job's status says so: Suspended, as a Job Kueue has not admitted, and still
    # in progress.
    assert eventually(lambda: condition(stack, namespace, "shape", "Suspended")
                      .get("reason") == "Queued", timeout=30, what="status to say Queued")
    assert condition(stack, namespace, "shape", "Suspended")["status"] == "True"
    assert condition(stack, namespace, "shape", "Reconciling")["reason"] == "Queued"
    st = status(stack, namespace, "shape")
    assert st["phase"] == "Suspended" and st["observedGeneration"] == 1
    assert st["workers"]["desired"] == 3 and st["runId"].startswith("run-")
    printed = stack.kubectl("get", "tj", "shape", "-n", namespace).stdout
    assert "Suspended" in printed and "0/3" in printed


def test_two_workers_train_to_success_with_progress_in_status(
        stack: StackHandle, namespace: str, operator: OperatorProcess) -> None:
    apply(stack, namespace, trainingjob("allreduce", env={"STEPS": "12"}))
    progress = eventually(lambda: status(stack, namespace, "allreduce").get("progress", {})
                          .get("step", 0) >= 1 and status(stack, namespace, "allreduce"),
                          timeout=180, what="progress to appear in status")
    assert progress["phase"] == "Running"
    assert progress["progress"]["totalSteps"] == 12
    assert progress["progress"]["samplesPerSecond"] == 32.0
    assert progress["workers"]["ready"] == 2
    wait_condition(stack, namespace, "allreduce", "Succeeded")
    final = status(stack, namespace, "allreduce")
    assert final["phase"] == "Succeeded"
    assert final["metrics"] == {"metric": "accuracy", "test": 0.875, "validation": 0.9}
    assert final["progress"]["percent"] == 100.0
    assert final["workers"]["restarts"] == 0
    assert condition(stack, namespace, "allreduce", "Ready")["status"] == "True"
    assert condition(stack, namespace, "allreduce", "Reconciling")["status"] == "False"
    # A custom command reports no gate and no verdict.
    assert (condition(stack, namespace, "allreduce", "Promoted")["status"],
            condition(stack, namespace, "allreduce", "Promoted")["reason"]) == \
        ("False", "NotApplicable")
    assert condition(stack, namespace, "allreduce", "DataQualityPassed")["reason"] == \
        "NotApplicable"
    assert final["promotion"]["verdict"] == "NotApplicable"
    assert done_lines(stack, namespace, "allreduce") == ["rank 0/2 done", "rank 1/2 done"]
    assert events(stack, namespace, "allreduce")[0] == "Created"
    assert "Completed" in events(stack, namespace, "allreduce")
    metrics = requests.get(operator.metrics_url, timeout=10).text
    assert f'tailor_trainingjobs{{namespace="{namespace}",phase="Succeeded"}} 1.0' in metrics


def _worker_process(marker: str, rank: int) -> int | None:
    """The host pid of the training process of global rank `rank` in the job tagged `marker`."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in cmdline and f"RANK={rank}".encode() in environ \
                and cmdline[:2] == [b"python", b"-c"]:
            return int(proc.name)
    return None


def test_a_killed_worker_restarts_the_whole_group_and_the_job_still_succeeds(
        stack: StackHandle, namespace: str, operator: OperatorProcess) -> None:
    marker = f"kill-{uuid.uuid4().hex[:8]}"
    # Long enough that the kill lands mid-run even on a loaded machine; the restart is short.
    apply(stack, namespace, trainingjob("resilient", env={"STEPS": "40", "STEP_SECONDS": "0.5"},
                                        marker=marker))
    eventually(lambda: status(stack, namespace, "resilient").get("progress", {})
               .get("step", 0) >= 2, timeout=180, what="training to make progress")
    first_pods = {p["metadata"]["uid"] for p in pods_of(stack, namespace, "resilient")}
    pid = eventually(lambda: _worker_process(marker, 1), timeout=10,
                     what="the rank-1 training process")
    os.kill(pid, signal.SIGKILL)
    wait_condition(stack, namespace, "resilient", "Succeeded", timeout=240)
    final = status(stack, namespace, "resilient")
    assert final["workers"]["restarts"] == 1
    assert final["failure"]["reason"] == "WorkerFailed"
    assert final["failure"]["worker"] == 1
    # Both workers were replaced together, not just the one that died.
    assert first_pods.isdisjoint(p["metadata"]["uid"] for p in pods_of(stack, namespace,
                                                                           "resilient"))
    assert "Restarting" in events(stack, namespace, "resilient")


def test_exceeding_the_backoff_limit_fails_with_the_reason(
        stack: StackHandle, namespace: str, operator: OperatorProcess) -> None:
    apply(stack, namespace, trainingjob("flaky", env={"EXIT_CODE": "3"},
                                        run_policy={"backoffLimit": 1}))
    failed = wait_condition(stack, namespace, "flaky", "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "failed 2 times" in failed["message"]
    final = status(stack, namespace, "flaky")
    assert final["workers"]["restarts"] == 1
    assert final["failure"]["exitCode"] == 3
    assert condition(stack, namespace, "flaky", "Stalled")["status"] == "True"


def test_the_permanent_exit_code_fails_at_once_without_restarts(
        stack: StackHandle, namespace: str, operator: OperatorProcess) -> None:
    apply(stack, namespace, trainingjob("baddata", env={
        "EXIT_CODE": str(trainer_api.EXIT_PERMANENT)}))
    failed = wait_condition(stack, namespace, "baddata", "Failed")
    assert failed["reason"] == "PermanentFailure"
    final = status(stack, namespace, "baddata")
    assert final["workers"]["restarts"] == 0
    assert final["failure"]["exitCode"] == trainer_api.EXIT_PERMANENT


def test_suspend_stops_the_pods_resume_runs_again_and_delete_leaves_nothing(
        stack: StackHandle, namespace: str, operator: OperatorProcess) -> None:
    apply(stack, namespace, trainingjob("pausable", env={"STEPS": "400"}))
    wait_condition(stack, namespace, "pausable", "Running")
    stack.kubectl("patch", "tj", "pausable", "-n", namespace, "--type=merge",
                  "-p", '{"spec": {"runPolicy": {"suspend": true}}}')
    wait_condition(stack, namespace, "pausable", "Suspended")
    eventually(lambda: pods_of(stack, namespace, "pausable") == [], timeout=60,
               what="the worker pods to go")
    assert status(stack, namespace, "pausable")["phase"] == "Suspended"
    stack.kubectl("patch", "tj", "pausable", "-n", namespace, "--type=merge",
                  "-p", '{"spec": {"runPolicy": {"suspend": false}}}')
    wait_condition(stack, namespace, "pausable", "Running")
    assert condition(stack, namespace, "pausable", "Suspended")["status"] == "False"
    assert status(stack, namespace, "pausable")["workers"]["restarts"] == 0
    stack.kubectl("delete", "tj", "pausable", "-n", namespace, "--wait=true", timeout=120)
    for kind in ("jobs", "services", "pods"):
        eventually(lambda kind=kind: json.loads(stack.kubectl(
            "get", kind, "-n", namespace, "-l", "tailor.dev/trainingjob=pausable", "-o", "json"
        ).stdout)["items"] == [], timeout=60, what=f"the TrainingJob's {kind} to be deleted")


def test_the_active_deadline_fails_the_job(stack: StackHandle, namespace: str,
                                           operator: OperatorProcess) -> None:
    apply(stack, namespace, trainingjob("slow", env={"STEPS": "400"},
                                        run_policy={"activeDeadlineSeconds": 15}))
    failed = wait_condition(stack, namespace, "slow", "Failed", timeout=120)
    assert failed["reason"] == "DeadlineExceeded"


def test_two_jobs_in_one_namespace_stay_isolated(stack: StackHandle, namespace: str,
                                                 operator: OperatorProcess) -> None:
    apply(stack, namespace, trainingjob("alpha", env={"STEPS": "3"}))
    apply(stack, namespace, trainingjob("beta", workers=1, env={"STEPS": "3"}))
    for name in ("alpha", "beta"):
        wait_condition(stack, namespace, name, "Succeeded")
    assert len(pods_of(stack, namespace, "alpha")) == 2
    assert len(pods_of(stack, namespace, "beta")) == 1
    logs = {name: done_lines(stack, namespace, name) for name in ("alpha", "beta")}
    assert logs == {"alpha": ["rank 0/2 done", "rank 1/2 done"], "beta": ["rank 0/1 done"]}


def test_solo_operator_killed_mid_reconcile_leaves_no_duplicates(
        stack: StackHandle, namespace: str, crds: None, tmp_path: Path) -> None:
    own = OperatorProcess(stack, tmp_path / "operator.log", "--namespace", namespace)
    names = [f"job-{i}" for i in range(6)]
    for name in names:
        apply(stack, namespace, trainingjob(name, workers=1, env={"STEPS": "2"}))
    eventually(lambda: json.loads(stack.kubectl("get", "services", "-n", namespace, "-o",
                                                "json").stdout)["items"], timeout=30,
               what="the operator to start reconciling")
    own.kill()  # SIGKILL, mid-way through the batch
    restarted = OperatorProcess(stack, tmp_path / "operator-2.log", "--namespace", namespace)
    try:
        for name in names:
            wait_condition(stack, namespace, name, "Succeeded")
        for kind in ("services", "jobs"):
            items = json.loads(stack.kubectl("get", kind, "-n", namespace, "-o",
                                             "json").stdout)["items"]
            owners = sorted(i["metadata"]["labels"]["tailor.dev/trainingjob"] for i in items)
            assert owners == names, kind
        assert all(status(stack, namespace, n)["workers"]["restarts"] == 0 for n in names)
    finally:
        restarted.stop()


@pytest.mark.parametrize("ttl", [3])
def test_ttl_after_finished_deletes_the_job(stack: StackHandle, namespace: str,
                                            operator: OperatorProcess, ttl: int) -> None:
    apply(stack, namespace, trainingjob("ephemeral", workers=1, env={"STEPS": "1"},
                                        run_policy={"ttlSecondsAfterFinished": ttl}))
    wait_condition(stack, namespace, "ephemeral", "Succeeded")
    eventually(lambda: get(stack, namespace, "tj", "ephemeral") == {}, timeout=60,
               what="the finished TrainingJob to be deleted after its TTL")
