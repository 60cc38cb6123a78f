"""The models' outputs and scores: predictions, the classification report, the generic baseline.

Every model is judged on the same examples, once, at the end: the candidate, the generic
baseline and the production model when there is one. The generic baseline is the base model
used without fine-tuning. An encoder has no classification head of its own, so it predicts in
one of two ways (`model.baseline.genericMethod`):

- `LinearProbe` (the default): a multinomial logistic regression on its frozen, mean-pooled
  features, fitted on the training split with the regularization chosen on validation. That is
  the cheapest thing a team could deploy instead of a fine-tuned model, and it isolates what
  fine-tuning adds: the stricter bar.
- `ZeroShot`: the model exactly as it comes, no training at all, the way a sentence-embedding
  model is used off the shelf: each example gets the label whose prompt ("{label}" filled in)
  is nearest in cosine similarity. It asks whether custom training beats the generic model.

The paired significance tests are in `tailor_trainer.significance` and the promotion rule in
`tailor_trainer.judge`; neither needs torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tailor_contract import metrics
from torch import nn

from tailor_trainer.schedule import autocast

PROBE_PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1)
ZERO_SHOT_SCALE = 20.0
"""Cosine similarities times this are the zero-shot logits (sentence-transformers' usual scale);
it changes the calibration error reported for the baseline, never its predictions."""
ECE_BINS = 15


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    confidence = probs.max(1)
    correct = (probs.argmax(1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def classification_report(y: np.ndarray, probs: np.ndarray,
                          labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class scores, confusion matrix and calibration error."""
    classes = len(labels)
    pred = probs.argmax(1)
    matrix = metrics.confusion_matrix(y, pred, classes)
    per_class = {}
    for i, label in enumerate(labels):
        tp = int(matrix[i, i])
        predicted, actual = int(matrix[:, i].sum()), int(matrix[i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1,
                            "support": actual}
    return {
        "examples": len(y),
        "accuracy": float((pred == y).mean()) if len(y) else 0.0,
        "macro-f1": metrics.macro_f1(matrix),
        "calibration_error": expected_calibration_error(y, probs) if len(y) else 0.0,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


# --- model outputs --------------------------------------------------------------------------

def predict(model: nn.Module, recipe: Any, items: Sequence[Any], device: torch.device,
            amp: torch.dtype | None, batch_size: int = 64,
            features: bool = False) -> np.ndarray:
    """Class probabilities (or pooled features) for encoded items, in their order."""
    model.eval()
    order = sorted(range(len(items)), key=lambda i: -recipe.length(items[i]))
    out: list[np.ndarray] = [np.empty(0)] * len(items)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = {k: v.to(device) for k, v in
                     recipe.collate([items[i] for i in idx], False).items()}
            with autocast(device, amp):
                result = (model.features(**batch)  # type: ignore[operator]
                          if features else model(**batch))
            values = result.float()
            if not features:
                values = torch.softmax(values, -1)
            for row, i in enumerate(idx):
                out[i] = values[row].cpu().numpy()
    if not items:
        return np.zeros((0, 0))
    return np.stack(out)


class LinearProbe:
    """Multinomial logistic regression on standardized frozen features (L-BFGS, L2)."""

    def __init__(self, classes: int) -> None:
        self.classes = classes
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.linear: nn.Linear | None = None
        self.penalty = 0.0

    def _fit_one(self, x: torch.Tensor, y: torch.Tensor, penalty: float) -> nn.Linear:
        torch.manual_seed(0)
        linear = nn.Linear(x.shape[1], self.classes).double()
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
        opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=200,
                                line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(linear(x), y)
            loss = loss + penalty * linear.weight.pow(2).sum()
            loss.backward()  # type: ignore[no-untyped-call]
            return loss

        opt.step(closure)  # type: ignore[no-untyped-call]
        return linear

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
            y_val: np.ndarray) -> dict[str, float]:
        xt = torch.as_tensor(x_train, dtype=torch.float64)
        self.mean = xt.mean(0)
        self.std = xt.std(0).clamp(min=1e-6)
        xt = (xt - self.mean) / self.std
        yt = torch.as_tensor(y_train, dtype=torch.long)
        xv = (torch.as_tensor(x_val, dtype=torch.float64) - self.mean) / self.std
        best_acc, best = -1.0, None
        for penalty in PROBE_PENALTIES:
            linear = self._fit_one(xt, yt, penalty)
            with torch.no_grad():
                acc = float((linear(xv).argmax(1).numpy() == y_val).mean()) if len(y_val) else 0.0
            if acc > best_acc:
                best_acc, best, self.penalty = acc, linear, penalty
        self.linear = best
        return {"validation_accuracy": best_acc, "penalty": self.penalty}

    def head_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The probe as weights of a linear layer on raw (unstandardized) features."""
        assert self.linear is not None and self.mean is not None and self.std is not None
        with torch.no_grad():
            weight = self.linear.weight / self.std
            bias = self.linear.bias - (weight * self.mean).sum(1)
        return weight.float().clone(), bias.float().clone()

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        assert self.linear is not None and self.mean is not None and self.std is not None
        xt = (torch.as_tensor(x, dtype=torch.float64) - self.mean) / self.std
        with torch.no_grad():
            return torch.softmax(self.linear(xt), -1).numpy()


def zero_shot_proba(x: np.ndarray, label_embeddings: np.ndarray) -> np.ndarray:
    """Class probabilities from the cosine similarity of each row of `x` to each label's
    embedding (row i of `label_embeddings` is label i)."""
    xt = nn.functional.normalize(torch.as_tensor(x, dtype=torch.float64), dim=-1)
    lt = nn.functional.normalize(torch.as_tensor(label_embeddings, dtype=torch.float64), dim=-1)
    return torch.softmax(ZERO_SHOT_SCALE * xt @ lt.T, -1).numpy()
