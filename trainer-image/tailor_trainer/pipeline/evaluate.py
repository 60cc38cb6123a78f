"""Stage 4, evaluate (rank 0, once): every model on every benchmark, and the verdict.

The test rows are read into the model once, after training: first checked against the locked
manifest (a changed or missing example fails the run, the numbers would not be comparable),
then scored for the candidate, the generic baseline and the production model when there is
one (`<model uri>/production.json`; a production model with another label set is noted and
not compared). The recent holdout of data.productionUris, when there is one, is read the same
way, once, for the candidate and the production model. The verdict comes from
`tailor_trainer.judge`, which says why a retrain is judged on both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tailor_contract import trainer_api, uris

from tailor_trainer import artifacts, evaluate
from tailor_trainer.data.split import verify_test_set
from tailor_trainer.judge import Benchmark, judge
from tailor_trainer.pipeline.baseline import Probe, generic_predictions
from tailor_trainer.pipeline.context import RunContext
from tailor_trainer.pipeline.data import LocalData, test_digests
from tailor_trainer.recipes.base import Recipe
from tailor_trainer.train import TrainResult

NO_PRODUCTION_DATA = "no labelled production data (data.productionUris)"
NO_PRODUCTION_MODEL = "no production model to compare with"


@dataclass
class Scores:
    """Each model's report on one benchmark, and its predicted classes."""

    y: np.ndarray
    labels: list[str]
    results: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, name: str, probs: np.ndarray, **extra: Any) -> None:
        self.results[name] = {**evaluate.classification_report(self.y, probs, self.labels),
                              **extra}
        self.predictions[name] = probs.argmax(1)

    def benchmark(self) -> Benchmark:
        return Benchmark(self.y, dict(self.predictions))


def evaluate_run(ctx: RunContext, recipe: Recipe, result: TrainResult, local: LocalData,
                 probe: Probe | None) -> dict[str, Any]:
    """The run's metrics.json: scores on each benchmark, comparisons, verdict, training."""
    spec, labels = ctx.spec, ctx.labels
    assert ctx.locked is not None
    verify_test_set(ctx.locked, test_digests(recipe, local),
                    trainer_api.test_set_manifest(ctx.cfg.model_uri, ctx.locked.version))
    locked, recent, notes = _score(ctx, recipe, result, local, probe)
    verdict = judge(locked.benchmark(), _recent_benchmark(ctx, locked, recent, notes), len(labels),
                    spec.evaluation, spec.promotion, spec.hyperparameters.seed)
    return {
        "runId": ctx.cfg.run_id, "model": ctx.cfg.model_name, "task": spec.task,
        "metric": spec.evaluation.metric, "labels": labels,
        "validation": result.validation,
        "test": locked.results,
        "recentHoldout": _recent_section(ctx, recent),
        "comparisons": [c.to_dict() for c in verdict.comparisons],
        "verdict": {"promote": verdict.promote, "reason": verdict.reason,
                    "message": verdict.message},
        "promotion": verdict.summary(),
        "testSet": {"version": ctx.locked.version, "fingerprint": ctx.locked.fingerprint,
                    "examples": len(ctx.locked.ids)},
        "training": {"steps": result.steps, "totalSteps": result.total_steps,
                     "epochs": result.epochs_done, "bestStep": result.best_step,
                     "seconds": result.train_seconds,
                     "samplesPerSecond": result.samples_per_second,
                     "resumedFrom": result.resumed_from,
                     "stoppedEarly": result.stopped_early, "worldSize": ctx.world.size},
        "history": result.history,
        "notes": notes,
    }


def _score(ctx: RunContext, recipe: Recipe, result: TrainResult, local: LocalData,
           probe: Probe | None) -> tuple[Scores, Scores, list[str]]:
    """The candidate, the generic baseline and the production model on the locked test set;
    the candidate and the production model on the recent holdout."""
    labels, device = ctx.labels, ctx.world.device
    index = {label: i for i, label in enumerate(labels)}
    locked = Scores(np.array([index[y] for _, _, y in local.test], dtype=np.int64), labels)
    recent = Scores(np.array([index[y] for _, _, y in local.recent], dtype=np.int64), labels)
    notes: list[str] = []
    locked.add("candidate", evaluate.predict(result.model, recipe, local.test_items, device,
                                             ctx.amp))
    if local.recent:
        recent.add("candidate", evaluate.predict(result.model, recipe, local.recent_items,
                                                 device, ctx.amp))
    if probe is not None:
        probs, how = generic_predictions(ctx, recipe, probe, local.test_items)
        locked.add("generic", probs, **how)
    pointer = (artifacts.production_model(ctx.store, ctx.cfg.model_uri)
               if ctx.model.baseline.production else None)
    if pointer is not None:
        outputs = production_predictions(ctx, recipe, pointer,
                                         [local.test_items, local.recent_items])
        if outputs is None:
            notes.append("the production model has a different label set; not compared")
        else:
            locked.add("production", outputs[0], runId=pointer.get("runId"))
            if local.recent:
                recent.add("production", outputs[1], runId=pointer.get("runId"))
    return locked, recent, notes


def _recent_benchmark(ctx: RunContext, locked: Scores, recent: Scores,
                      notes: list[str]) -> Benchmark | str | None:
    """The recent holdout for the rule, or why it cannot judge (None: the question does not
    arise, with neither production data nor a production model)."""
    plan = ctx.recent
    if plan is None:
        return NO_PRODUCTION_DATA if "production" in locked.predictions or notes else None
    if not plan.applicable:
        return plan.why_not()
    if not len(recent.y):
        return (f"the {len(plan.ids)} held-out examples were all left out (their ids name "
                "curated examples)")
    if "production" not in recent.predictions:
        return notes[0] if notes else NO_PRODUCTION_MODEL
    return recent.benchmark()


def _recent_section(ctx: RunContext, recent: Scores) -> dict[str, Any] | None:
    """metrics.json's `recentHoldout`: the counts and each model's report (None without
    production data)."""
    plan = ctx.recent
    if plan is None:
        return None
    return {"applicable": plan.applicable, "productionRows": plan.production_rows,
            "planned": len(plan.ids), "examples": len(recent.y), "why": plan.why_not(),
            "manifest": trainer_api.ARTIFACT_RECENT_HOLDOUT, "test": recent.results}


def production_predictions(ctx: RunContext, recipe: Recipe, pointer: dict[str, Any],
                           item_lists: list[list[Any]]) -> list[np.ndarray] | None:
    """The production model's probabilities on each list of items (loaded once); None when its
    labels differ from ours."""
    local_dir = ctx.work_dir / "production-model"
    prefix = str(pointer["modelUri"])
    for relative in pointer.get("files", {}):
        ctx.store.download(uris.join(prefix, relative), local_dir / relative)
    model, labels = recipe.load(local_dir)
    if labels != ctx.labels:
        return None
    model = model.to(ctx.world.device)
    return [evaluate.predict(model, recipe, items, ctx.world.device, ctx.amp) if items
            else np.zeros((0, len(labels))) for items in item_lists]
