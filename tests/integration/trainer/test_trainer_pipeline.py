"""The whole run on the stack: MiniLM fine-tuned on a BBC News slice by two torchrun processes,
promoted over the generic model used zero-shot, with artifacts and manifest in MinIO and an
MLflow run; then a second run on grown data that keeps the locked test set and is judged
against the linear probe and the model now in production."""

from __future__ import annotations

import hashlib
import time
import urllib.request
from typing import Any

import pytest
from conftest import MINILM, S3, Trainer, to_csv
from mlflow.tracking import MlflowClient
from tailor_contract import trainer_api
from tailor_contract.profile import ReferenceProfile

from tests.support.story import bbc_rows

MODEL = "bbc-news-it"
LABELS = ["business", "entertainment", "politics", "sports", "tech"]
ZERO_SHOT_PROMPT = "This is a news article about {label}."


def scrape(port: str) -> dict[str, float]:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return {}
    return {line.split()[0]: float(line.split()[1]) for line in text.decode().splitlines()
            if line and not line.startswith("#")}


def spec_for(trainer: Trainer, s3: S3, data_uri: str, base: str, *,
             baseline: dict[str, Any], steps: int) -> dict[str, Any]:
    return trainer.spec(
        MODEL, data_uri, base,
        model={"name": MODEL, "base": base, "baseline": baseline},
        data={"uri": data_uri, "columns": {"id": "id", "text": "text", "label": "label"},
              "labels": LABELS, "split": {"validation": 0.15, "test": 0.3},
              "quality": {"minExamples": 50, "classBalance": {"minPerClass": 5}}},
        hyperparameters={"epochs": 1, "maxSteps": steps, "batchSize": 8,
                         "maxSequenceLength": 32, "learningRate": 0.0001},
        checkpoint={"interval": "10m", "everySteps": 3, "keep": 1},
    )


@pytest.fixture(scope="module")
def base_model(s3: S3) -> str:
    """all-MiniLM-L6-v2 mirrored into S3, as the example TrainingJob does."""
    return s3.upload_dir(MINILM, "base-models/all-MiniLM-L6-v2/")


def test_train_promote_then_retrain_on_grown_data(trainer: Trainer, s3: S3,
                                                  base_model: str) -> None:
    # --- run 1: nothing in production yet; the generic model, used zero-shot, to beat ------
    first = s3.put("datasets/bbc/v1.csv", to_csv(bbc_rows(100)))
    zero_shot = {"genericMethod": "ZeroShot", "zeroShotPrompt": ZERO_SHOT_PROMPT}
    env = trainer.env(spec_for(trainer, s3, first, base_model, baseline=zero_shot, steps=6),
                      "run-1", name="bbc-news")
    proc = trainer.start(env, nproc=2)
    deadline = time.monotonic() + 240
    seen: dict[str, float] = {}
    while proc.poll() is None and time.monotonic() < deadline:
        seen = scrape(env[trainer_api.ENV_METRICS_PORT])
        if seen.get(trainer_api.METRIC_STEP, 0) >= 1:
            break
        time.sleep(0.2)  # poll interval, bounded by the deadline
    assert seen.get(trainer_api.METRIC_TOTAL_STEPS) == 6, seen
    assert trainer_api.METRIC_LOSS in seen and trainer_api.METRIC_ETA_SECONDS in seen
    result = trainer.finish(proc, env, timeout=300)
    assert result.code == 0, result.log[-4000:]
    assert result.summary is not None and result.summary.outcome == "Succeeded"
    assert result.summary.promoted is True and result.summary.reason == "Promoted"
    run1 = f"models/{MODEL}/runs/run-1/"
    assert result.summary.artifact_uri == s3.uri(run1)

    # Artifacts, listed with their digests in the manifest written last.
    manifest = s3.json(run1 + "manifest.json")
    files = manifest["files"]
    for required in ("model/model.safetensors", "model/config.json", "model/tokenizer.json",
                     "model/tailor-model.json", "metrics.json", "data-quality.json",
                     "reference-profile.json", "model-card.md", "confusion-matrix.png"):
        assert required in files, sorted(files)
    for name, entry in files.items():
        assert hashlib.sha256(s3.get(run1 + name)).hexdigest() == entry["sha256"], name
    metrics = s3.json(run1 + "metrics.json")
    assert metrics["training"]["worldSize"] == 2 and metrics["training"]["steps"] == 6
    assert metrics["verdict"]["reason"] == "Promoted"
    # Promoted over the generic baseline: better by the margin, and significantly so.
    assert set(metrics["test"]) == {"candidate", "generic"}
    generic = metrics["test"]["generic"]
    assert generic["method"] == "ZeroShot"
    assert generic["prompts"] == [ZERO_SHOT_PROMPT.replace("{label}", x) for x in LABELS]
    [versus] = metrics["comparisons"]
    assert versus["baseline"] == "generic" and versus["better"] and versus["significant"]
    assert versus["p_value"] < 0.05 and versus["improvement"] >= 0.01, versus
    assert "generic (ZeroShot)" in s3.get(run1 + "model-card.md").decode()
    profile = ReferenceProfile.from_json(s3.json(run1 + "reference-profile.json"))
    assert list(profile.classes) == LABELS and "text" in profile.features
    quality = s3.json(run1 + "data-quality.json")
    assert quality["passed"] and quality["examples"] == 500
    # The gate's outcome reaches the operator (the DataQualityPassed condition).
    assert result.summary.data_quality == (trainer_api.QUALITY_WARNINGS if quality["warnings"]
                                           else trainer_api.QUALITY_PASSED)
    locked_key = f"models/{MODEL}/test-sets/v1/manifest.json"
    locked = s3.get(locked_key)
    locked_ids = {e["id"] for e in s3.json(locked_key)["examples"]}
    assert metrics["testSet"]["examples"] == len(locked_ids) == quality["split"]["test"]

    # Promotion: model copied, then the pointer flipped; MLflow alias moved.
    pointer = s3.json(f"models/{MODEL}/production.json")
    assert pointer["runId"] == "run-1"
    assert s3.keys(f"models/{MODEL}/production/run-1/model/model.safetensors")
    client = MlflowClient(tracking_uri=trainer.mlflow_uri)
    run = client.get_run(result.summary.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["tailor.run_id"] == "run-1"
    assert "test_candidate_accuracy" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 6
    assert run.data.params["hyperparameters.batchSize"] == "8"
    version = client.get_model_version_by_alias(MODEL, "production")
    assert version.run_id == run.info.run_id

    # --- run 2: more data; the locked test set stays exactly as it was ---------------------
    grown = s3.put("datasets/bbc/v2.csv", to_csv(bbc_rows(120)))
    env2 = trainer.env(spec_for(trainer, s3, grown, base_model, baseline={}, steps=3),
                       "run-2", name="bbc-news-retrain")
    result2 = trainer.run(env2, nproc=2, timeout=300)
    assert result2.code == 0, result2.log[-4000:]
    assert s3.get(locked_key) == locked
    metrics2 = s3.json(f"models/{MODEL}/runs/run-2/metrics.json")
    assert metrics2["testSet"]["fingerprint"] == metrics["testSet"]["fingerprint"]
    assert metrics2["test"]["candidate"]["examples"] == len(locked_ids)
    quality2 = s3.json(f"models/{MODEL}/runs/run-2/data-quality.json")
    assert quality2["examples"] == 600 and quality2["split"]["test"] == len(locked_ids)
    # Judged against both the generic baseline (by default the stricter linear probe; see
    # docs/trainer.md for why a short CPU fine-tune does not beat it) and run 1's model.
    assert set(metrics2["test"]) == {"candidate", "generic", "production"}
    assert metrics2["test"]["generic"]["method"] == "LinearProbe"
    assert metrics2["test"]["production"]["runId"] == "run-1"
    assert {c["baseline"] for c in metrics2["comparisons"]} == {"generic", "production"}
    assert result2.summary is not None
    assert result2.summary.reason in ("Promoted", "NotBetter", "NotSignificant")
