"""The model metrics, defined once: the trainer's evaluation and promotion gate and the
DriftMonitor's accuracy check compute them here, so a monitor's threshold is on the same scale
as the score the model was promoted on.

Every metric is a function of a confusion matrix. Macro-F1 is the unweighted mean of the
per-class F1 over the classes that occur in the data, as a label or as a prediction; a class
with neither has no F1 (0/0) and is left out rather than counted as 0, which would lower a
perfect model's score in every window where a rare class happens not to appear. This is
scikit-learn's ``f1_score(average="macro", labels=<all classes>, zero_division=nan)``.
F1 is symmetric in labels and predictions, so either orientation of the matrix gives the same
score.
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np
import numpy.typing as npt

Metric = Literal["accuracy", "macro-f1"]
METRICS: Final[tuple[Metric, ...]] = ("accuracy", "macro-f1")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def confusion_matrix(labels: npt.ArrayLike, predictions: npt.ArrayLike,
                     classes: int) -> IntArray:
    """``matrix[label, prediction]`` counts, for class indexes ``0..classes-1``."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64),
                       np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


def accuracy(confusion: npt.ArrayLike) -> float:
    """Share of correct predictions; NaN for an empty matrix."""
    matrix = np.asarray(confusion, dtype=np.float64)
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else float("nan")


def per_class_f1(confusion: npt.ArrayLike) -> FloatArray:
    """F1 of each class, ``2 tp / (2 tp + fp + fn)``; NaN for a class absent from the data."""
    f1: FloatArray = _per_class_f1(np.asarray(confusion, dtype=np.float64)[None, :, :])[0]
    return f1


def macro_f1(confusion: npt.ArrayLike) -> float:
    """Mean F1 over the classes present; NaN when no class is."""
    return float(macro_f1_many(np.asarray(confusion, dtype=np.float64)[None, :, :])[0])


def macro_f1_many(confusions: npt.ArrayLike) -> FloatArray:
    """``macro_f1`` of each ``confusions[b]``: vectorised for bootstraps."""
    f1 = _per_class_f1(np.asarray(confusions, dtype=np.float64))
    present = ~np.isnan(f1)
    count = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(present, f1, 0.0).sum(axis=1) / np.maximum(count, 1)
    return np.where(count > 0, mean, np.nan)


def score(metric: Metric, confusion: npt.ArrayLike) -> float:
    """The named metric of a confusion matrix."""
    if metric == "accuracy":
        return accuracy(confusion)
    if metric == "macro-f1":
        return macro_f1(confusion)
    raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")


def _per_class_f1(confusions: FloatArray) -> FloatArray:
    tp = np.diagonal(confusions, axis1=1, axis2=2)
    denom = confusions.sum(axis=1) + confusions.sum(axis=2)  # 2 tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)
