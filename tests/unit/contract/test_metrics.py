"""One definition of each metric: the trainer's evaluation and the DriftMonitor's accuracy check
give the same number on the same predictions (tailor_contract.metrics)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from tailor.drift.accuracy import ConfusionAccumulator, LabelIndex, evaluate_accuracy
from tailor_contract import metrics
from tailor_trainer import evaluate

CLASSES = ("business", "politics", "sport", "tech")


def _drift_score(metric: str, labels: np.ndarray, predictions: np.ndarray) -> float:
    ids = pa.array([f"row-{i}" for i in range(len(labels))])
    names = np.array(CLASSES)
    truth = LabelIndex.from_batches([pa.table({"id": ids, "label": names[labels]})],
                                    timestamp_column=None)
    window = ConfusionAccumulator(CLASSES, cohort_seconds=3600)
    window.update(ids, pa.array(names[predictions]), None, truth)
    result = evaluate_accuracy(window, metric=metric, min_labeled=1)
    assert result.value is not None
    return result.value


@pytest.mark.parametrize("seed", range(5))
def test_training_and_drift_score_alike_with_a_class_absent_from_the_window(seed):
    rng = np.random.default_rng(seed)
    # "tech" (class 3) is neither a label nor a prediction in this window.
    labels = rng.integers(0, 3, size=300)
    predictions = np.where(rng.random(300) < 0.8, labels, rng.integers(0, 3, size=300))
    probs = np.eye(len(CLASSES))[predictions]
    report = evaluate.classification_report(labels, probs, CLASSES)

    assert report["macro-f1"] == pytest.approx(_drift_score("macro-f1", labels, predictions))
    assert report["accuracy"] == pytest.approx(_drift_score("accuracy", labels, predictions))
    # The absent class is left out, not counted as an F1 of 0.
    present = metrics.per_class_f1(metrics.confusion_matrix(labels, predictions, 3))
    assert report["macro-f1"] == pytest.approx(present.mean())


def test_a_class_only_predicted_counts_as_zero():
    labels = np.array([0, 0, 1, 1])
    predictions = np.array([0, 2, 1, 1])  # class 2 is predicted once, never a label
    f1 = metrics.per_class_f1(metrics.confusion_matrix(labels, predictions, 4))
    assert f1[2] == 0.0 and np.isnan(f1[3])
    assert metrics.macro_f1(metrics.confusion_matrix(labels, predictions, 4)) == pytest.approx(
        (2 / 3 + 1.0 + 0.0) / 3)


def test_orientation_does_not_matter():
    matrix = np.array([[5, 1, 0], [2, 7, 1], [0, 3, 4]])
    assert metrics.macro_f1(matrix) == pytest.approx(metrics.macro_f1(matrix.T))


def test_empty_and_unknown():
    assert np.isnan(metrics.macro_f1(np.zeros((3, 3))))
    assert np.isnan(metrics.accuracy(np.zeros((3, 3))))
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        metrics.score("auc", np.eye(2))  # type: ignore[arg-type]
