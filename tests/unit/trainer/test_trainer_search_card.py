"""The final run of a tuned job documents its search: a "Hyper-parameter search" section in the
model card (objective, algorithm, early stopping, space, every trial, the best one, and that the
test score was not tuned on) and `tuning.*` parameters for its MLflow run."""

from __future__ import annotations

import json
from typing import Any

from tailor_contract import trainer_api
from tailor_trainer import artifacts
from tailor_trainer.config import load_config
from tailor_trainer.search import NOT_TUNED_ON_TEST, card_lines, mlflow_params

SEARCH: dict[str, Any] = {
    "objective": {"metric": "macro-f1", "direction": "maximize"},
    "algorithm": "tpe",
    "earlyStopping": {"algorithm": "median", "minEpochs": 2},
    "searchSpace": {"learningRate": {"min": 1e-5, "max": 1e-3, "scale": "log"},
                    "batchSize": {"values": [16, 32]},
                    "warmupRatio": {"min": 0.0, "max": 0.2, "step": 0.05}},
    "maxTrials": 4,
    "trials": [
        {"number": 1, "parameters": {"learningRate": 0.0007, "batchSize": 32},
         "state": "Pruned", "value": 0.61, "epochs": 2},
        {"number": 0, "parameters": {"learningRate": 0.0003, "batchSize": 16},
         "state": "Completed", "value": 0.9123, "epochs": 3},
        {"number": 2, "parameters": {"learningRate": 0.002, "batchSize": 16},
         "state": "Failed"},
    ],
    "best": {"number": 0, "parameters": {"learningRate": 0.0003, "batchSize": 16},
             "value": 0.9123},
}

METRICS: dict[str, Any] = {
    "task": "text-classification",
    "verdict": {"reason": "Promoted", "message": "better than generic"},
    "testSet": {"version": 1, "fingerprint": "ab" * 32},
    "test": {"candidate": {"examples": 40, "accuracy": 0.9, "macro-f1": 0.88,
                           "calibration_error": 0.05,
                           "per_class": {"a": {"precision": 0.9, "recall": 0.9, "f1": 0.9,
                                               "support": 20}}}},
    "comparisons": [],
    "training": {"steps": 12, "epochs": 3.0, "bestStep": 12, "samplesPerSecond": 10.0},
}


def test_the_section_documents_the_whole_search() -> None:
    text = "\n".join(card_lines(SEARCH))
    assert "## Hyper-parameter search" in text
    assert "**macro-f1** on the validation split (maximize)" in text
    assert "algorithm `tpe`" in text and "median, never before epoch 2" in text
    assert "3 trials of at most 4" in text
    assert NOT_TUNED_ON_TEST in text
    assert "| learningRate | 1e-05 .. 0.001 (log scale) |" in text
    assert "| batchSize | 16, 32 |" in text and "| warmupRatio | 0 .. 0.2 (step 0.05) |" in text
    rows = [line for line in text.splitlines() if line.startswith("| 0") or
            line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert rows == [
        "| 0 (best) | Completed | 0.9123 | 3 | batchSize=16, learningRate=0.0003 |",
        "| 1 | Pruned | 0.6100 | 2 | batchSize=32, learningRate=0.0007 |",
        "| 2 | Failed |  |  | batchSize=16, learningRate=0.002 |",
    ]
    assert "**Best: trial 0**, macro-f1 0.9123 on the validation split, with batchSize=16, " \
           "learningRate=0.0003" in text


def test_the_model_card_of_a_tuned_run_has_the_section_and_an_untuned_one_not() -> None:
    tuned = artifacts.model_card("news", "run-1", "/models/m", METRICS, False, SEARCH)
    plain = artifacts.model_card("news", "run-1", "/models/m", METRICS, False)
    assert tuned.startswith(plain.rstrip("\n"))
    assert "## Hyper-parameter search" in tuned and "Hyper-parameter" not in plain
    assert tuned.endswith("\n") and plain.endswith("\n")


def test_the_search_as_mlflow_params() -> None:
    assert mlflow_params(SEARCH) == {
        "tuning.metric": "macro-f1", "tuning.direction": "maximize", "tuning.algorithm": "tpe",
        "tuning.earlyStopping": "median", "tuning.maxTrials": 4, "tuning.trials": 3,
        "tuning.bestTrial": 0, "tuning.bestValue": 0.9123,
        "tuning.best.learningRate": 0.0003, "tuning.best.batchSize": 16}
    assert mlflow_params({**SEARCH, "earlyStopping": None})["tuning.earlyStopping"] == "none"


def test_the_search_variable_reaches_the_config() -> None:
    spec = {"task": "text-classification", "model": {"base": "/models/m"},
            "data": {"uri": "s3://bucket/d.csv", "columns": {"text": "text"}},
            "output": {"uri": "s3://bucket/models"}}
    obj = {"metadata": {"name": "news"}, "spec": spec}
    cfg = load_config({trainer_api.ENV_TRAININGJOB: json.dumps(obj),
                       trainer_api.ENV_RUN_ID: "run-1",
                       trainer_api.ENV_ARTIFACT_URI: "s3://bucket/models/news/runs/run-1/",
                       trainer_api.ENV_MODEL_URI: "s3://bucket/models/news/",
                       trainer_api.ENV_SEARCH: json.dumps(SEARCH)})
    assert cfg.search == SEARCH and cfg.trial is None
