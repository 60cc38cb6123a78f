"""Reading what the operator hands the trainer; a bad spec is a permanent failure."""

from __future__ import annotations

import json

import pytest
from tailor_contract import trainer_api
from tailor_trainer.config import load_config
from tailor_trainer.errors import PermanentError

SPEC = {"task": "text-classification", "model": {"base": "/models/m"},
        "data": {"uri": "s3://bucket/d.csv", "columns": {"text": "text"}},
        "output": {"uri": "s3://bucket/models"}}


def env(spec=None, **extra):
    obj = {"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "news", "namespace": "ml", "uid": "u"}, "spec": spec or SPEC}
    return {trainer_api.ENV_TRAININGJOB: json.dumps(obj), trainer_api.ENV_RUN_ID: "r1",
            trainer_api.ENV_ARTIFACT_URI: "s3://bucket/models/news/r1/",
            trainer_api.ENV_MODEL_URI: "s3://bucket/models/news/", **extra}


def test_parses_and_defaults() -> None:
    cfg = load_config(env())
    assert cfg.model_name == "news" and cfg.namespace == "ml"
    assert cfg.spec.hyperparameters.epochs == 3
    assert cfg.metrics_port == trainer_api.METRICS_PORT
    assert cfg.checkpoint_uri == "s3://bucket/models/news/r1/checkpoints/"
    assert cfg.termination_log == "/dev/termination-log"


def test_invalid_spec_names_the_field() -> None:
    bad = {**SPEC, "hyperparameters": {"learningRate": 0}}
    with pytest.raises(PermanentError, match=r"spec\.hyperparameters\.learningRate"):
        load_config(env(bad))


def test_not_json() -> None:
    with pytest.raises(PermanentError, match="not valid JSON"):
        load_config({**env(), trainer_api.ENV_TRAININGJOB: "{"})


def test_missing_variable() -> None:
    values = env()
    del values[trainer_api.ENV_ARTIFACT_URI]
    with pytest.raises(PermanentError, match=trainer_api.ENV_ARTIFACT_URI):
        load_config(values)
