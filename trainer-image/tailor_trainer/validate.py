"""Scoring the validation split during training: model selection and early stopping.

Every rank scores its shard; the confusion matrices and loss sums are added up over the ranks,
so every rank takes the same decision. Accuracy and macro-F1 are the contract's definitions
(tailor_contract.metrics), the ones the locked test set and the DriftMonitor are scored with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as torch_dist
from tailor_contract import metrics
from torch import nn

from tailor_trainer.dist import World
from tailor_trainer.recipes.base import Recipe
from tailor_trainer.schedule import autocast

if TYPE_CHECKING:
    from tailor_trainer.train import Shard


def confusion(logits: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    pred = logits.argmax(-1)
    return torch.bincount(labels * classes + pred, minlength=classes * classes).reshape(
        classes, classes)


def scores_from_confusion(matrix: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 of a confusion matrix; 0 for an empty one."""
    if not matrix.sum():
        return {"accuracy": 0.0, "macro-f1": 0.0}
    return {"accuracy": metrics.accuracy(matrix), "macro-f1": metrics.macro_f1(matrix)}


def validate(world: World, recipe: Recipe, model: nn.Module, val: Shard, classes: int,
             batch_size: int, amp: torch.dtype | None) -> dict[str, float]:
    """Accuracy, macro-F1 and mean loss over every rank's validation shard (a collective)."""
    model.eval()
    matrix = torch.zeros(classes, classes, dtype=torch.long)
    loss_sum = torch.zeros(1, dtype=torch.float64)
    order = sorted(range(len(val.items)), key=lambda i: -recipe.length(val.items[i]))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = {k: v.to(world.device) for k, v in
                     recipe.collate([val.items[i] for i in idx], False).items()}
            labels = torch.tensor([val.labels[i] for i in idx], device=world.device)
            with autocast(world.device, amp):
                logits = model(**batch).float()
            loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").cpu()
            matrix += confusion(logits, labels, classes).cpu()
    packed = torch.cat([matrix.flatten().double(), loss_sum]).to(world.device)
    if world.distributed:
        torch_dist.all_reduce(packed)
    packed = packed.cpu()
    matrix_np = packed[:-1].reshape(classes, classes).numpy().astype(np.int64)
    scores = scores_from_confusion(matrix_np)
    count = max(1, int(matrix_np.sum()))
    scores["loss"] = float(packed[-1]) / count
    model.train()
    return scores
