"""Trial mode's settings and objective: TAILOR_TRIAL parsed (a bad one is a permanent
InvalidSpec), the best epoch selected by the objective in either direction, the objective on
the progress endpoint once per epoch, the curve thinned to fit the termination message, and a
NaN training loss stopping any run as a permanent NonFiniteLoss."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from tailor_contract import constants, trainer_api
from tailor_contract.trainer_api import TerminationSummary
from tailor_contract.trainingjob import TrainingJobSpec
from tailor_trainer.checkpoint import Checkpointer
from tailor_trainer.config import load_config
from tailor_trainer.dist import World
from tailor_trainer.errors import PermanentError
from tailor_trainer.metrics import Progress
from tailor_trainer.objective import (
    MAX_CURVE_POINTS,
    Objective,
    check_finite,
    parse_trial,
    thin,
    trial_report,
)
from tailor_trainer.resume import StopSignal
from tailor_trainer.storage import Store
from tailor_trainer.train import Shard, Trainer
from torch import nn

TRIAL = {"number": 3, "metric": "loss", "direction": "minimize", "searchRunId": "run-abc"}


def env(**extra: str) -> dict[str, str]:
    spec = {"task": "text-classification", "model": {"base": "/models/m"},
            "data": {"uri": "s3://bucket/d.csv", "columns": {"text": "text"}},
            "output": {"uri": "s3://bucket/models"}}
    obj = {"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "news", "namespace": "ml", "uid": "u"}, "spec": spec}
    return {trainer_api.ENV_TRAININGJOB: json.dumps(obj),
            trainer_api.ENV_RUN_ID: "run-abc-trial-3",
            trainer_api.ENV_ARTIFACT_URI: "s3://bucket/models/news/runs/run-abc/trials/3/",
            trainer_api.ENV_MODEL_URI: "s3://bucket/models/news/", **extra}


def test_the_trial_variable_puts_the_run_in_trial_mode() -> None:
    cfg = load_config(env(**{trainer_api.ENV_TRIAL: json.dumps(TRIAL)}))
    assert cfg.trial is not None
    assert (cfg.trial.number, cfg.trial.search_run_id) == (3, "run-abc")
    assert cfg.trial.objective == Objective("loss", "minimize")
    assert load_config(env()).trial is None


@pytest.mark.parametrize(("value", "problem"), [
    ("{not json", "not valid JSON"),
    ("[1]", "must be a JSON object"),
    (json.dumps({**TRIAL, "metric": "test-accuracy"}), "metric must be one of"),
    (json.dumps({**TRIAL, "direction": "up"}), "direction must be one of"),
    (json.dumps({**TRIAL, "number": -1}), "number must be an integer"),
    (json.dumps({**TRIAL, "number": True}), "number must be an integer"),
    (json.dumps({k: v for k, v in TRIAL.items() if k != "searchRunId"}), "searchRunId"),
])
def test_a_bad_trial_variable_is_a_permanent_invalid_spec(value: str, problem: str) -> None:
    with pytest.raises(PermanentError, match=problem) as info:
        load_config(env(**{trainer_api.ENV_TRIAL: value}))
    assert info.value.reason == constants.REASON_INVALID_SPEC
    assert trainer_api.ENV_TRIAL in info.value.message


def test_a_bad_search_variable_is_a_permanent_invalid_spec() -> None:
    with pytest.raises(PermanentError, match="best must be an object") as info:
        load_config(env(**{trainer_api.ENV_SEARCH: json.dumps(
            {"objective": {"metric": "accuracy"}, "trials": []})}))
    assert info.value.reason == constants.REASON_INVALID_SPEC


def test_the_objective_compares_higher_is_better_in_either_direction() -> None:
    scores = {"accuracy": 0.8, "macro-f1": 0.7, "loss": 0.4}
    assert Objective("accuracy").score(scores) == 0.8
    assert Objective("loss", "minimize").score(scores) == -0.4
    assert Objective("loss", "minimize").score({"loss": 0.3}) > Objective(
        "loss", "minimize").score(scores)


def test_a_long_curve_is_thinned_keeping_the_first_last_and_best_epochs() -> None:
    points = [(k, 1.0 / k) for k in range(1, 501)]
    thinned = thin(points, keep=137)
    assert len(thinned) == MAX_CURVE_POINTS
    epochs = [e for e, _ in thinned]
    assert epochs == sorted(set(epochs))
    assert {1, 137, 500} <= set(epochs)
    assert all(dict(points)[e] == v for e, v in thinned)
    assert thin(points[:10], keep=3) == points[:10]


def test_the_trial_report_names_the_selected_epoch_and_fits_the_message() -> None:
    validations = [{"step": 10 * k, "accuracy": 0.5, "macro-f1": 0.4, "loss": 1.0 / k + (
        0.5 if k == 300 else 0.0)} for k in range(1, 301)]
    report = trial_report(3, Objective("loss", "minimize"), validations, best_step=2990)
    assert report["number"] == 3 and report["bestEpoch"] == 299
    assert report["value"] == pytest.approx(1.0 / 299, abs=1e-6)
    assert len(report["curve"]) == MAX_CURVE_POINTS and [299, report["value"]] in report["curve"]
    message = TerminationSummary(outcome="Succeeded", artifact_uri="s3://b/" + "x" * 200,
                                 metrics={"validation": report["value"]}, trial=report)
    parsed = TerminationSummary.parse(message.to_message())
    assert parsed is not None and parsed.trial["curve"] == report["curve"]


def test_a_non_finite_loss_is_a_permanent_failure_naming_step_and_rate() -> None:
    check_finite(2.5, 1, 0.1)
    for bad in (math.nan, math.inf):
        with pytest.raises(PermanentError, match=r"step 7 \(learning rate 0\.001") as info:
            check_finite(bad, 7, 1e-3)
        assert info.value.reason == constants.REASON_NON_FINITE_LOSS


class BagModel(nn.Module):
    def __init__(self, num_labels: int, poison: bool) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(50, 8)
        self.head = nn.Linear(8, num_labels)
        self.poison = poison

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.embed(input_ids))
        return out * math.nan if self.poison and self.training else out


class ToyRecipe:
    """Token lists; `poison` makes every training forward pass NaN (validation stays finite)."""

    task = "custom"

    def __init__(self, poison: bool = False) -> None:
        self.poison = poison

    def build(self, num_labels: int) -> nn.Module:
        return BagModel(num_labels, self.poison)

    def length(self, item: Any) -> int:
        return len(item)

    def collate(self, items: Sequence[Any], train: bool) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor(list(items))}


def fit(tmp_path: Path, objective: Objective | None, *, poison: bool = False,
        progress: Progress | None = None, **hp: Any) -> Any:
    spec = TrainingJobSpec.model_validate({
        "task": "custom", "command": ["true"],
        "data": {"uri": "/unused", "columns": {"text": "text"}},
        "output": {"uri": "s3://unused/x"}, "checkpoint": {"interval": "24h"},
        "hyperparameters": {"epochs": 3, "batchSize": 4, "earlyStoppingPatience": 0,
                            "learningRate": 0.05, **hp}})
    generator = torch.Generator().manual_seed(0)
    items = torch.randint(0, 50, (24, 5), generator=generator).tolist()
    labels = [sum(i) % 3 for i in items]
    world = World(rank=0, local_rank=0, size=1, device=torch.device("cpu"))
    work = tmp_path / f"work-{objective}-{poison}"
    trainer = Trainer(world, spec, ToyRecipe(poison), 3,  # type: ignore[arg-type]
                      Checkpointer(Store(), str(work / "ckpt"), work, 2), progress,
                      lambda step, values: None, objective=objective,
                      report_objective=objective is not None)
    return trainer.fit(Shard(items, labels), Shard(items[:8], labels[:8]), StopSignal())


def test_the_best_epoch_is_selected_by_the_trial_objective(tmp_path: Path) -> None:
    progress = Progress()
    result = fit(tmp_path, Objective("loss", "minimize"), progress=progress)
    losses = [v["loss"] for v in result.validations]
    assert len(losses) == 3
    best = min(range(3), key=lambda i: losses[i])
    assert result.best_step == result.validations[best]["step"]
    assert result.validation["loss"] == losses[best]
    # One sample per epoch on the progress endpoint, every earlier one still there.
    samples = {s.labels[trainer_api.LABEL_EPOCH]: s.value
               for metric in progress.registry.collect()
               if metric.name == trainer_api.METRIC_VALIDATION_OBJECTIVE
               for s in metric.samples}
    assert samples == {"1": losses[0], "2": losses[1], "3": losses[2]}
    # The other direction picks another epoch: selection follows the objective.
    worst = fit(tmp_path / "max", Objective("loss", "maximize"))
    assert [v["loss"] for v in worst.validations] == losses
    assert worst.best_step == result.validations[max(range(3), key=lambda i: losses[i])]["step"]
    assert worst.best_step != result.best_step


def test_an_ordinary_run_reports_no_objective(tmp_path: Path) -> None:
    progress = Progress()
    result = fit(tmp_path, None, progress=progress)
    assert len(result.validations) == 3
    assert not [s for metric in progress.registry.collect()
                if metric.name == trainer_api.METRIC_VALIDATION_OBJECTIVE
                for s in metric.samples]


def test_a_nan_training_loss_stops_any_run_permanently(tmp_path: Path) -> None:
    for objective in (None, Objective("accuracy", "maximize")):
        with pytest.raises(PermanentError, match=r"optimizer step 1 \(learning rate") as info:
            fit(tmp_path, objective, poison=True)
        assert info.value.reason == constants.REASON_NON_FINITE_LOSS
        assert info.value.exit_code == trainer_api.EXIT_PERMANENT


def test_parse_trial_reads_what_the_operator_writes() -> None:
    trial = parse_trial(json.dumps({"number": 0, "metric": "macro-f1",
                                    "direction": "maximize", "searchRunId": "run-1"}))
    assert trial.objective == Objective("macro-f1", "maximize") and trial.number == 0
