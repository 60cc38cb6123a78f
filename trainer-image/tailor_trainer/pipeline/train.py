"""Stage 3, train: the task's recipe and the DDP fine-tuning of the candidate.

The recipe (and with it the base model) is built before the gate locks a test set: a base
model that cannot be used is a bad configuration, and must leave nothing behind.
"""

from __future__ import annotations

import numpy as np
from tailor_contract.trainingjob import TASK_IMAGE_CLASSIFICATION, TASK_TEXT_CLASSIFICATION

from tailor_trainer import evaluate
from tailor_trainer.checkpoint import Checkpointer
from tailor_trainer.dist import agree
from tailor_trainer.errors import REASON_INVALID_SPEC, PermanentError
from tailor_trainer.objective import Objective
from tailor_trainer.pipeline.baseline import Head
from tailor_trainer.pipeline.context import RunContext
from tailor_trainer.recipes.base import Recipe, fetch_base_model
from tailor_trainer.resume import StopSignal
from tailor_trainer.train import Shard, Trainer, TrainResult


def recipe(ctx: RunContext) -> Recipe:
    """The built-in recipe of spec.task, with its base model fetched."""
    base_uri = ctx.model.base
    assert base_uri is not None
    base = fetch_base_model(ctx.store, base_uri, ctx.work_dir)
    hp = ctx.spec.hyperparameters
    if ctx.spec.task == TASK_TEXT_CLASSIFICATION:
        from tailor_trainer.recipes.text import TextRecipe

        return TextRecipe(base, hp.max_sequence_length)
    if ctx.spec.task == TASK_IMAGE_CLASSIFICATION:
        from tailor_trainer.recipes.image import ImageRecipe, image_root

        return ImageRecipe(base, hp.image_size, ctx.store,
                           image_root(ctx.store, ctx.data.uri), ctx.columns.input)
    raise PermanentError(REASON_INVALID_SPEC, f"no built-in recipe for {ctx.spec.task}")


def fit(ctx: RunContext, recipe: Recipe, train: Shard, val: Shard,
        head: Head | None) -> TrainResult:
    """Fine-tune on every rank, resuming from the run's newest checkpoint if there is one.

    Training holds collectives of its own, so it runs outside `agree`: a rank that fails there
    exits, and torchrun stops its peers. A trial selects by, and reports, its objective; a
search's final run selects by the same objective.
    """
    checkpointer = Checkpointer(ctx.store, ctx.cfg.checkpoint_uri, ctx.work_dir,
                                ctx.spec.checkpoint.keep)
    trial, search = ctx.cfg.trial, ctx.cfg.search
    objective = trial.objective if trial else None
    if search is not None:
        # A search's final run keeps its epoch by the objective the search chose it by.
        chosen = search["objective"]
        objective = Objective(chosen["metric"], chosen.get("direction") or "maximize")
    trainer = Trainer(ctx.world, ctx.spec, recipe, len(ctx.labels), checkpointer,
                      ctx.progress, ctx.tracker.metrics, objective=objective,
                      report_objective=trial is not None)
    stop = StopSignal()
    with stop.installed():
        result = trainer.fit(train, val, stop, head)
    ctx.tracker.flush()
    return result


def validation_outputs(ctx: RunContext, recipe: Recipe, result: TrainResult,
                       val: Shard) -> np.ndarray:
    """The selected model's class probabilities on this rank's validation shard (for the
    reference profile)."""
    return agree(ctx.world, lambda: evaluate.predict(result.model, recipe, val.items,
                                                     ctx.world.device, ctx.amp))

