"""data.productionUris on the stack: a retrain sets the most recent production rows aside,
lists them in recent-holdout.json (in the manifest), and is judged on them against the model in
production, part by part, in metrics.json, the termination message and MLflow; production data
without its timestamp column fails the gate naming the column, with nothing published."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import S3, Trainer, to_csv
from mlflow.tracking import MlflowClient
from tailor_contract import trainer_api

MODEL = "recent-holdout-it"
WORDS = {"business": "market shares profit bank", "sport": "match goal team league",
         "tech": "software chip phone internet"}
T0 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()


def curated() -> list[dict[str, Any]]:
    return [{"id": f"{c}-{i}", "text": f"{WORDS[c]} story {i} {c}", "label": c}
            for c in WORDS for i in range(12)]


def production(s3: S3, name: str, count: int, timestamps: bool = True) -> str:
    """Labelled production examples, one a minute (prod-0 first), as a Parquet object."""
    classes = list(WORDS)
    rows: dict[str, list[Any]] = {
        "id": [f"prod-{i}" for i in range(count)],
        "text": [f"{WORDS[classes[i % 3]]} customer note {i}" for i in range(count)],
        "label": [classes[i % 3] for i in range(count)]}
    if timestamps:
        rows["timestamp"] = [datetime.fromtimestamp(T0 + 60 * i, UTC) for i in range(count)]
    out = io.BytesIO()
    pq.write_table(pa.table(rows), out)
    return s3.put(f"models/{MODEL}/production-data/{name}.parquet", out.getvalue())


def spec(trainer: Trainer, data_uri: str, base: str, production_uris: list[str]) -> Any:
    data: dict[str, Any] = {"uri": data_uri, "columns": {"id": "id", "text": "text",
                                                          "label": "label"},
                            "quality": {"minExamples": 20, "classBalance": {"minPerClass": 2}}}
    if production_uris:
        data["productionUris"] = production_uris
    return trainer.spec(MODEL, data_uri, base, data=data,
                        model={"name": MODEL, "base": base, "baseline": {"generic": False}})


def test_a_retrain_is_judged_on_the_recent_holdout(trainer: Trainer, s3: S3, tiny_model) -> None:
    main = s3.put(f"data/{MODEL}/curated.csv", to_csv(curated()))
    # Run 1: the model in production (nothing to beat without a generic baseline).
    first = trainer.run(trainer.env(spec(trainer, main, str(tiny_model), []), "run-1"),
                        timeout=240)
    assert first.code == 0, first.log[-4000:]
    assert s3.json(f"models/{MODEL}/production.json")["runId"] == "run-1"

    # Run 2: 60 labelled production rows; 30% is 18, fewer than minExamples, so the 30 latest.
    fresh = production(s3, "window-1", 60)
    result = trainer.run(trainer.env(spec(trainer, main, str(tiny_model), [fresh]), "run-2"),
                         timeout=240)
    assert result.code == 0, result.log[-4000:]
    run2 = f"models/{MODEL}/runs/run-2/"
    manifest = s3.json(run2 + "manifest.json")
    assert trainer_api.ARTIFACT_RECENT_HOLDOUT in manifest["files"]
    holdout = s3.json(run2 + trainer_api.ARTIFACT_RECENT_HOLDOUT)
    assert (holdout["count"], holdout["productionRows"], holdout["applicable"]) == (30, 60, True)
    assert {e["id"] for e in holdout["examples"]} == {f"prod-{i}" for i in range(30, 60)}
    assert holdout["from"] == "2026-11-01T00:30:00Z" and holdout["to"] == "2026-11-01T00:59:00Z"
    quality = s3.json(run2 + "data-quality.json")
    assert quality["production"] == {"uris": [fresh], "rows": 60, "leftOut": 0,
                                     "recentHoldout": 30}
    assert quality["split"]["recent"] == 30
    assert quality["split"]["train"] + quality["split"]["validation"] + \
        quality["split"]["test"] == 36 + 30
    metrics = s3.json(run2 + "metrics.json")
    assert metrics["recentHoldout"]["examples"] == 30
    assert set(metrics["recentHoldout"]["test"]) == {"candidate", "production"}
    parts = metrics["promotion"]["parts"]
    assert [(p["benchmark"], p["against"]) for p in parts] == [
        ("recentHoldout", "production"), ("lockedTestSet", "production")]
    assert parts[0]["examples"] == 30 and isinstance(parts[0]["passed"], bool)
    assert result.summary is not None and result.summary.promotion["parts"] == parts
    client = MlflowClient(tracking_uri=trainer.mlflow_uri)
    run = client.get_run(result.summary.mlflow_run_id)
    assert run.data.tags["tailor.promotion.recentHoldout.production"] in ("passed", "failed")
    assert run.data.metrics["promotion_recentHoldout_production_examples"] == 30
    assert "recent_candidate_accuracy" in run.data.metrics
    assert "## Verdict per benchmark" in s3.get(run2 + "model-card.md").decode()

    # Run 3: production rows without timestamps cannot be ordered: the gate refuses them.
    undated = production(s3, "undated", 60, timestamps=False)
    bad = trainer.run(trainer.env(spec(trainer, main, str(tiny_model), [undated]), "run-3"),
                      timeout=240)
    assert bad.code == trainer_api.EXIT_PERMANENT, bad.log[-4000:]
    assert bad.summary is not None and bad.summary.reason == "DataQualityFailed"
    assert "timestamp column 'timestamp' (data.columns.timestamp)" in bad.summary.message
    assert bad.summary.data_quality == trainer_api.QUALITY_FAILED
    assert s3.keys(f"models/{MODEL}/runs/run-3/") == []
    assert s3.json(f"models/{MODEL}/production.json")["runId"] == "run-1"
