"""Stage 2, baseline: the generic model the candidate must beat, before training starts.

A linear probe on the frozen base model is fitted whenever the generic baseline is on: it is
that baseline (`LinearProbe`), and its head also starts the candidate's (linear probing, then
fine-tuning), whichever method judges the candidate. Every rank computes the frozen features
of its shards; rank 0 fits the probe on all of them. The test set is not touched until after
training (`generic_predictions`, in the evaluation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tailor_trainer import evaluate
from tailor_trainer.dist import agree, broadcast, gather
from tailor_trainer.pipeline.context import RunContext
from tailor_trainer.recipes.base import Recipe
from tailor_trainer.train import Shard

log = logging.getLogger("tailor_trainer")
PROBE_MAX_EXAMPLES = 20000
"""Training examples (over all ranks) the linear probe is fitted on."""

Head = tuple[torch.Tensor, torch.Tensor]
"""A linear layer's (weight, bias): the probe as the candidate's first head."""


@dataclass
class Probe:
    """The frozen base model, every rank's features of train/validation, and the fit."""

    model: nn.Module
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    linear: evaluate.LinearProbe | None = None
    fit: dict[str, float] | None = None


def fit_probe(ctx: RunContext, recipe: Recipe, train: Shard,
              val: Shard) -> tuple[Probe | None, Head | None]:
    """The probe (on every rank; fitted on rank 0) and its head (on every rank); (None, None)
    when the generic baseline is off. Holds collectives: call it on every rank."""
    world = ctx.world
    generic, features = agree(world, lambda: _features(ctx, recipe, train, val))
    probe = _gather(gather(world, features), generic)
    head = agree(world, lambda: _fit(ctx, probe) if world.is_main else None)
    return probe, broadcast(world, head)


def _features(ctx: RunContext, recipe: Recipe, train: Shard,
              val: Shard) -> tuple[Any, tuple[Any, ...] | None]:
    """This rank's frozen base-model features of train/validation (None: no probe)."""
    if not ctx.model.baseline.generic:
        return None, None
    device = ctx.world.device
    generic = recipe.generic().to(device)
    cap = max(1, PROBE_MAX_EXAMPLES // ctx.world.size)
    x_train = evaluate.predict(generic, recipe, train.items[:cap], device, ctx.amp,
                               features=True)
    x_val = evaluate.predict(generic, recipe, val.items, device, ctx.amp, features=True)
    return generic, (x_train, train.labels[:cap], x_val, val.labels)


def _gather(parts: list[tuple[Any, ...] | None], generic: Any) -> Probe | None:
    """Every rank's features in one probe data set (rank order)."""
    if generic is None or any(p is None for p in parts):
        return None
    ready = [p for p in parts if p is not None]

    def stack(i: int) -> np.ndarray:
        arrays = [p[i] for p in ready if len(p[i])]
        return np.concatenate(arrays) if arrays else np.zeros((0, 1))

    return Probe(model=generic,
                 x_train=stack(0), y_train=np.concatenate([np.asarray(p[1]) for p in ready]),
                 x_val=stack(2), y_val=np.concatenate([np.asarray(p[3]) for p in ready]))


def _fit(ctx: RunContext, probe: Probe | None) -> Head | None:
    if probe is None:
        return None
    probe.linear = evaluate.LinearProbe(len(ctx.labels))
    probe.fit = probe.linear.fit(probe.x_train, probe.y_train, probe.x_val, probe.y_val)
    log.info("linear probe on the frozen base model: validation accuracy %.4f",
             probe.fit["validation_accuracy"])
    return probe.linear.head_weights()


def generic_predictions(ctx: RunContext, recipe: Recipe, probe: Probe,
                        items: list[Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """The generic baseline's test probabilities, and how it predicted them."""
    baseline = ctx.model.baseline
    device = ctx.world.device
    x = evaluate.predict(probe.model, recipe, items, device, ctx.amp, features=True)
    if baseline.generic_method == "ZeroShot":
        prompts = baseline.zero_shot_texts(ctx.labels)
        x_labels = evaluate.predict(probe.model, recipe, recipe.encode(prompts), device,
                                    ctx.amp, features=True)
        return (evaluate.zero_shot_proba(x, x_labels),
                {"method": "ZeroShot", "prompts": prompts})
    assert probe.linear is not None
    return (probe.linear.predict_proba(x),
            {"method": "LinearProbe", "probe": probe.fit})
