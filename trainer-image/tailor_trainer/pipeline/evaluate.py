"""Stage 4, evaluate (rank 0, once): every model on the locked test set, and the verdict.

The test rows are read into the model once, after training: first checked against the locked
manifest (a changed or missing example fails the run, the numbers would not be comparable),
then scored for the candidate, the generic baseline and the production model when there is
one (`<model uri>/production.json`; a production model with another label set is noted and
not compared). The verdict comes from `tailor_trainer.evaluate.decide`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tailor_contract import trainer_api, uris

from tailor_trainer import artifacts, evaluate
from tailor_trainer.data.split import verify_test_set
from tailor_trainer.pipeline.baseline import Probe, generic_predictions
from tailor_trainer.pipeline.context import RunContext
from tailor_trainer.pipeline.data import LocalData, test_digests
from tailor_trainer.recipes.base import Recipe
from tailor_trainer.train import TrainResult


@dataclass
class Scores:
    """Each model's report on the test set, its predictions, and what was left out why."""

    results: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, y: np.ndarray, probs: np.ndarray, labels: list[str],
            **extra: Any) -> None:
        self.results[name] = {**evaluate.classification_report(y, probs, labels), **extra}
        self.predictions[name] = probs.argmax(1)


def evaluate_run(ctx: RunContext, recipe: Recipe, result: TrainResult, local: LocalData,
                 probe: Probe | None) -> dict[str, Any]:
    """The run's metrics.json: test scores, comparisons, verdict, training numbers."""
    spec, labels = ctx.spec, ctx.labels
    assert ctx.locked is not None
    verify_test_set(ctx.locked, test_digests(recipe, local),
                    trainer_api.test_set_manifest(ctx.cfg.model_uri, ctx.locked.version))
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[label] for _, _, label in local.test])
    scores = _score(ctx, recipe, result, local.test_items, y, probe)
    comparisons = [evaluate.compare(name, y, scores.predictions["candidate"], pred, len(labels),
                                    spec.evaluation, spec.hyperparameters.seed)
                   for name, pred in scores.predictions.items() if name != "candidate"]
    verdict = evaluate.decide(comparisons, spec.promotion, spec.evaluation)
    return {
        "runId": ctx.cfg.run_id, "model": ctx.cfg.model_name, "task": spec.task,
        "metric": spec.evaluation.metric, "labels": labels,
        "validation": result.validation,
        "test": scores.results,
        "comparisons": [c.to_dict() for c in comparisons],
        "verdict": {"promote": verdict.promote, "reason": verdict.reason,
                    "message": verdict.message},
        "testSet": {"version": ctx.locked.version, "fingerprint": ctx.locked.fingerprint,
                    "examples": len(ctx.locked.ids)},
        "training": {"steps": result.steps, "totalSteps": result.total_steps,
                     "epochs": result.epochs_done, "bestStep": result.best_step,
                     "seconds": result.train_seconds,
                     "samplesPerSecond": result.samples_per_second,
                     "resumedFrom": result.resumed_from,
                     "stoppedEarly": result.stopped_early, "worldSize": ctx.world.size},
        "history": result.history,
        "notes": scores.notes,
    }


def _score(ctx: RunContext, recipe: Recipe, result: TrainResult, items: list[Any],
           y: np.ndarray, probe: Probe | None) -> Scores:
    """The candidate, the generic baseline and the production model on the test items."""
    labels = ctx.labels
    scores = Scores()
    scores.add("candidate", y, evaluate.predict(result.model, recipe, items, ctx.world.device,
                                                ctx.amp), labels)
    if probe is not None:
        probs, how = generic_predictions(ctx, recipe, probe, items)
        scores.add("generic", y, probs, labels, **how)
    pointer = (artifacts.production_model(ctx.store, ctx.cfg.model_uri)
               if ctx.model.baseline.production else None)
    if pointer is not None:
        prod = production_predictions(ctx, recipe, pointer, items)
        if prod is None:
            scores.notes.append("the production model has a different label set; not compared")
        else:
            scores.add("production", y, prod, labels, runId=pointer.get("runId"))
    return scores


def production_predictions(ctx: RunContext, recipe: Recipe, pointer: dict[str, Any],
                           items: list[Any]) -> np.ndarray | None:
    """The production model's test probabilities; None when its labels differ from ours."""
    local_dir = ctx.work_dir / "production-model"
    prefix = str(pointer["modelUri"])
    for relative in pointer.get("files", {}):
        ctx.store.download(uris.join(prefix, relative), local_dir / relative)
    model, labels = recipe.load(local_dir)
    if labels != ctx.labels:
        return None
    model = model.to(ctx.world.device)
    return evaluate.predict(model, recipe, items, ctx.world.device, ctx.amp)
