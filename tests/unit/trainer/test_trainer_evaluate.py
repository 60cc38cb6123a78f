"""Evaluation: metrics, the paired significance tests against scipy, the probe, zero-shot."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from tailor_contract import metrics
from tailor_contract.trainingjob import Evaluation
from tailor_trainer import evaluate, significance
from tailor_trainer.validate import scores_from_confusion


def test_classification_report_counts() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 2, 0]]
    report = evaluate.classification_report(y, probs, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert report["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["b"]["recall"] == pytest.approx(1.0)
    # One-hot probabilities: confidence 1 everywhere, so the calibration error is the error rate.
    assert report["calibration_error"] == pytest.approx(2 / 6)


def test_exact_mcnemar_equals_the_two_sided_binomial_test() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    a = np.where(rng.random(400) < 0.9, y, (y + 1) % 3)
    b = np.where(rng.random(400) < 0.8, y, (y + 1) % 3)
    result = significance.mcnemar_exact(y, a, b)
    only_a, only_b = int(result["only_a"]), int(result["only_b"])
    expected = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert result["p_value"] == pytest.approx(expected)


def test_identical_classifiers_are_not_significantly_different() -> None:
    y = np.array([0, 1, 0, 1])
    assert significance.mcnemar_exact(y, y, y)["p_value"] == 1.0


def test_paired_bootstrap_interval_brackets_the_observed_difference() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    a = np.where(rng.random(300) < 0.95, y, (y + 1) % 4)
    b = np.where(rng.random(300) < 0.7, y, (y + 1) % 4)
    out = significance.paired_bootstrap_f1(y, a, b, 4, samples=500, alpha=0.05, seed=3)
    observed = significance.macro_f1(y, a, 4) - significance.macro_f1(y, b, 4)
    assert out["ci_low"] < observed < out["ci_high"]
    assert out["ci_low"] > 0  # a is clearly better
    same = significance.paired_bootstrap_f1(y, a, a, 4, samples=200, alpha=0.05, seed=3)
    assert same["ci_low"] == same["ci_high"] == 0.0


def test_compare_macro_f1_uses_the_bootstrap() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 300)
    a = np.where(rng.random(300) < 0.95, y, (y + 1) % 3)
    b = np.where(rng.random(300) < 0.6, y, (y + 1) % 3)
    ev = Evaluation(metric="macro-f1", bootstrap_samples=300)
    c = significance.compare("generic", y, a, b, 3, ev, seed=0)
    assert c.ci_low is not None and c.ci_low > 0 and c.significant and c.better


def test_linear_probe_separates_separable_features() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16)) * 4
    y = rng.integers(0, 3, 300)
    x = centers[y] + rng.normal(size=(300, 16))
    probe = evaluate.LinearProbe(3)
    fit = probe.fit(x[:200], y[:200], x[200:250], y[200:250])
    assert fit["validation_accuracy"] > 0.95
    assert (probe.predict_proba(x[250:]).argmax(1) == y[250:]).mean() > 0.95


def test_zero_shot_picks_the_label_with_the_most_similar_prompt() -> None:
    labels = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # Scale must not matter (cosine), only direction: row 0 leans to label 1, row 1 to label 2.
    x = np.array([[0.1, 5.0, 0.2], [0.0, 0.1, 0.3], [-1.0, -1.0, -1.0]])
    probs = evaluate.zero_shot_proba(x, labels)
    assert probs.shape == (3, 3)
    assert np.allclose(probs.sum(1), 1.0)
    assert probs[:2].argmax(1).tolist() == [1, 2]
    # Equally (dis)similar to every label: equal probabilities, not a confident guess.
    assert np.allclose(probs[2], 1 / 3)
    # The logits are the scaled cosines.
    cos = x[0] / np.linalg.norm(x[0])
    expected = np.exp(evaluate.ZERO_SHOT_SCALE * cos) / np.exp(evaluate.ZERO_SHOT_SCALE * cos).sum()
    assert np.allclose(probs[0], expected)


def test_validation_scores_use_the_contract_definitions() -> None:
    # Model selection during training scores validation as the test set and the DriftMonitor
    # are scored: class 2 occurs neither as a label nor as a prediction, and is left out.
    matrix = np.array([[5, 1, 0], [2, 7, 0], [0, 0, 0]])
    scores = scores_from_confusion(matrix)
    assert scores["macro-f1"] == pytest.approx(metrics.macro_f1(matrix))
    assert scores["macro-f1"] == pytest.approx((10 / 13 + 14 / 17) / 2)
    assert scores["accuracy"] == pytest.approx(12 / 15)
    assert scores_from_confusion(np.zeros((3, 3), dtype=np.int64)) == {"accuracy": 0.0,
                                                                        "macro-f1": 0.0}
