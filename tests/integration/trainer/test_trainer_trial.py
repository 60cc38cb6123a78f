"""Trial mode on the stack: a trial of a hyper-parameter search, run before its job's model has
a locked test set, reads only rows that the final run then puts in training or validation
(never a test or recent-holdout row), writes nothing outside its own prefix, and reports its
objective per epoch; the final run (TAILOR_SEARCH) is an ordinary run that documents the search
in its model card and MLflow run and adopts the trial's MLflow run as its child."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import S3, Trainer, to_csv
from mlflow.tracking import MlflowClient
from tailor_contract import trainer_api

MODEL = "trial-it"
WORDS = {"business": "market shares profit bank", "sport": "match goal team league",
         "tech": "software chip phone internet"}
T0 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
TRIAL = {"number": 0, "metric": "loss", "direction": "minimize", "searchRunId": "run-1"}


def production(s3: S3, count: int) -> str:
    """Labelled production examples, one a minute, as a Parquet object."""
    classes = list(WORDS)
    rows: dict[str, list[Any]] = {
        "id": [f"prod-{i}" for i in range(count)],
        "text": [f"{WORDS[classes[i % 3]]} customer note {i}" for i in range(count)],
        "label": [classes[i % 3] for i in range(count)],
        "timestamp": [datetime.fromtimestamp(T0 + 60 * i, UTC) for i in range(count)]}
    out = io.BytesIO()
    pq.write_table(pa.table(rows), out)
    return s3.put(f"data/{MODEL}/production.parquet", out.getvalue())


def search(trial_value: float) -> dict[str, Any]:
    return {"objective": {"metric": "loss", "direction": "minimize"}, "algorithm": "random",
            "earlyStopping": None, "maxTrials": 1,
            "searchSpace": {"learningRate": {"min": 1e-4, "max": 1e-2, "scale": "log"}},
            "trials": [{"number": 0, "parameters": {"learningRate": 0.001},
                        "state": "Completed", "value": trial_value, "epochs": 2}],
            "best": {"number": 0, "parameters": {"learningRate": 0.001}, "value": trial_value}}


def test_a_trial_reads_train_and_validation_only(trainer: Trainer, s3: S3, tiny_model) -> None:
    curated = [{"id": f"{c}-{i}", "text": f"{WORDS[c]} story {i} {c}", "label": c}
               for c in WORDS for i in range(16)]
    main = s3.put(f"data/{MODEL}/curated.csv", to_csv(curated))
    spec = trainer.spec(
        MODEL, main, str(tiny_model),
        model={"name": MODEL, "base": str(tiny_model), "baseline": {"generic": False}},
        data={"uri": main, "productionUris": [production(s3, 30)],
              "columns": {"id": "id", "text": "text", "label": "label"},
              "quality": {"minExamples": 20, "classBalance": {"minPerClass": 2}}},
        hyperparameters={"epochs": 2, "batchSize": 8, "maxSequenceLength": 32,
                         "learningRate": 0.001})
    prefix = f"models/{MODEL}/"
    before = set(s3.keys(prefix))
    job_run = s3.uri(f"{prefix}runs/run-1/")
    trial_uri = trainer_api.trial_artifact_uri(job_run, 0)
    env = trainer.env(spec, trainer_api.trial_run_id("run-1", 0), name="tuned", **{
        trainer_api.ENV_ARTIFACT_URI: trial_uri, trainer_api.ENV_TRIAL: json.dumps(TRIAL)})
    result = trainer.run(env, timeout=240)
    assert result.code == 0, result.log[-4000:]
    summary = result.summary
    assert summary is not None and summary.outcome == "Succeeded", result.log[-4000:]

    # The objective per epoch, the best one's value, in the termination message.
    trial = summary.trial
    assert trial["number"] == 0 and [e for e, _ in trial["curve"]] == [1, 2]
    assert trial["bestEpoch"] in (1, 2)
    assert trial["value"] == min(v for _, v in trial["curve"])
    assert summary.metrics == {trainer_api.SUMMARY_VALIDATION: trial["value"]}
    assert summary.promoted is None and not summary.promotion

    # Nothing outside the trial's own prefix: no test set locked, no model, no pointer.
    trial_prefix = trial_uri.removeprefix(f"s3://{s3.bucket}/")
    new = set(s3.keys(prefix)) - before
    assert new and all(k.startswith(trial_prefix) for k in new), sorted(new)
    assert not any(k.startswith(f"{trial_prefix}model/") for k in new)
    read = s3.json(trial_prefix + trainer_api.ARTIFACT_IDS_READ)
    assert read["test"] == [] and read["recentHoldout"] == []
    trial_ids = set(read["train"]) | set(read["validation"])

    # The final run locks the test set and holds the recent rows out: the trial read none.
    final_env = trainer.env(spec, "run-1", name="tuned",
                            **{trainer_api.ENV_SEARCH: json.dumps(search(trial["value"]))})
    final = trainer.run(final_env, timeout=240)
    assert final.code == 0, final.log[-4000:]
    locked = {e["id"] for e in s3.json(f"{prefix}test-sets/v1/manifest.json")["examples"]}
    run_read = s3.json(f"{prefix}runs/run-1/{trainer_api.ARTIFACT_IDS_READ}")
    assert set(run_read["test"]) == locked and run_read["recentHoldout"]
    assert not trial_ids & locked and not trial_ids & set(run_read["recentHoldout"])
    assert trial_ids == set(run_read["train"]) | set(run_read["validation"])
    manifest = s3.json(f"{prefix}runs/run-1/manifest.json")
    assert trainer_api.ARTIFACT_IDS_READ in manifest["files"]
    card = s3.get(f"{prefix}runs/run-1/model-card.md").decode()
    assert "## Hyper-parameter search" in card and "test score was not tuned on" in card

    # MLflow: the trial's own run, nested under the final run, which logs the search.
    client = MlflowClient(tracking_uri=trainer.mlflow_uri)
    trial_run = client.get_run(summary.mlflow_run_id)
    assert trial_run.info.run_name == "tuned-trial-0"
    tags = trial_run.data.tags
    assert tags["tailor.trial"] == "0" and tags["tailor.searchRunId"] == "run-1"
    assert trial_run.data.params["hyperparameters.learningRate"] == "0.001"
    assert len(client.get_metric_history(trial_run.info.run_id, "val_loss")) == 2
    assert final.summary is not None
    assert tags.get("mlflow.parentRunId") == final.summary.mlflow_run_id
    params = client.get_run(final.summary.mlflow_run_id).data.params
    assert params["tuning.bestTrial"] == "0" and params["tuning.trials"] == "1"
