"""A trainer run's context on local files, for unit tests of the pipeline's stages: a
one-process CPU world and a spec as the operator would hand it over (the environment of
`tailor_contract.trainer_api`), with the model's prefix under a temporary folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from tailor_contract import trainer_api
from tailor_trainer.config import ENV_WORK_DIR, load_config
from tailor_trainer.dist import World
from tailor_trainer.pipeline.context import RunContext


class PlainRecipe:
    """A recipe whose items are the texts themselves: enough for the data stage."""

    def encode(self, inputs: Sequence[str]) -> list[Any]:
        return list(inputs)

    def content(self, value: str, item: Any) -> str:
        return value


def local_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  spec: dict[str, Any]) -> RunContext:
    """Run `run-1` of the TrainingJob `ml/news` with `spec`, its work folder under `tmp_path`."""
    obj = {"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "news", "namespace": "ml", "uid": "u"}, "spec": spec}
    model_uri = str(tmp_path / "models" / "news") + "/"
    cfg = load_config({trainer_api.ENV_TRAININGJOB: json.dumps(obj),
                       trainer_api.ENV_RUN_ID: "run-1",
                       trainer_api.ENV_ARTIFACT_URI: model_uri + "runs/run-1/",
                       trainer_api.ENV_MODEL_URI: model_uri})
    monkeypatch.setenv(ENV_WORK_DIR, str(tmp_path / "work"))
    world = World(rank=0, local_rank=0, size=1, device=torch.device("cpu"))
    return RunContext.create(cfg, world)


def spread_head(model: torch.nn.Module, seed: int) -> None:
    """A large random head, so that a random encoder's features map to several labels (a test
    of predictions then tells the labels apart)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head: Any = model.head
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 20)
        head.bias.zero_()
