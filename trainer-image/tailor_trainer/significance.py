"""Paired significance tests: is the candidate better than another model, or not much worse?

Both models predict the same examples, so every test here is paired: it looks at the examples
on which they differ, which is far more sensitive than comparing two accuracies.

- Better (superiority, `compare`): the exact McNemar test on the paired correct/incorrect
  outcomes for accuracy (two-sided, and the direction must favour the candidate); a paired
  percentile bootstrap confidence interval of the difference for macro-F1.
- Not worse beyond a margin (non-inferiority, `non_inferior`): for accuracy, Tango's score test
  for the difference of paired proportions; for macro-F1, the lower one-sided percentile
  bootstrap bound of the difference. Both are one-sided at the significance level: the null
  hypothesis is "the candidate is worse by the margin or more", so passing needs evidence,
  and a small benchmark cannot show it by accident.

No torch here: the promotion rule (`tailor_trainer.judge`) is tested on simulated predictions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from tailor_contract import metrics
from tailor_contract.trainingjob import Evaluation


def macro_f1(y: np.ndarray, pred: np.ndarray, classes: int) -> float:
    """The contract's macro-F1 (the DriftMonitor scores production with the same function)."""
    return metrics.macro_f1(metrics.confusion_matrix(y, pred, classes))


def metric_value(metric: str, y: np.ndarray, pred: np.ndarray, classes: int) -> float:
    if metric == "accuracy":
        return float((pred == y).mean()) if len(y) else 0.0
    return macro_f1(y, pred, classes)


def mcnemar_exact(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict[str, float]:
    """Exact McNemar test on the paired outcomes of two classifiers (two-sided p-value)."""
    a_ok, b_ok = pred_a == y, pred_b == y
    table = np.array([[np.sum(a_ok & b_ok), np.sum(a_ok & ~b_ok)],
                      [np.sum(~a_ok & b_ok), np.sum(~a_ok & ~b_ok)]])
    if table[0, 1] + table[1, 0] == 0:
        return {"p_value": 1.0, "only_a": 0.0, "only_b": 0.0}
    result = mcnemar(table, exact=True)
    return {"p_value": float(result.pvalue), "only_a": float(table[0, 1]),
            "only_b": float(table[1, 0])}


def macro_f1_rows(y: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    """The contract's macro-F1 of each row of (y, pred): one confusion matrix per row, counted
    with a single bincount, scored by `metrics.macro_f1_many` (a bootstrap's resamples)."""
    y = np.atleast_2d(np.asarray(y, dtype=np.int64))
    pred = np.atleast_2d(np.asarray(pred, dtype=np.int64))
    rows = y.shape[0]
    cells = (np.arange(rows, dtype=np.int64)[:, None] * classes + y) * classes + pred
    counts = np.bincount(cells.ravel(), minlength=rows * classes * classes)
    return metrics.macro_f1_many(counts.reshape(rows, classes, classes))


def _f1_bootstrap(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, classes: int,
                  samples: int, confidence: float, seed: int) -> Any:
    def diff(yy: np.ndarray, aa: np.ndarray, bb: np.ndarray, axis: int = -1) -> np.ndarray:
        out: np.ndarray = macro_f1_rows(yy, aa, classes) - macro_f1_rows(yy, bb, classes)
        return out if out.size > 1 else out.reshape(())

    return stats.bootstrap((y, pred_a, pred_b), diff, paired=True, vectorized=True,
                           n_resamples=samples, confidence_level=confidence,
                           method="percentile", rng=np.random.default_rng(seed))


def paired_bootstrap_f1(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, classes: int,
                        samples: int, alpha: float, seed: int) -> dict[str, float]:
    """Percentile bootstrap CI (scipy) of macro-F1(a) - macro-F1(b), resampling examples."""
    result = _f1_bootstrap(y, pred_a, pred_b, classes, samples, 1 - alpha, seed)
    distribution = np.asarray(result.bootstrap_distribution)
    return {"ci_low": float(result.confidence_interval.low),
            "ci_high": float(result.confidence_interval.high),
            "p_value": float(np.mean(distribution <= 0.0))}


@dataclass
class Comparison:
    baseline: str
    metric: str
    candidate: float
    other: float
    improvement: float
    p_value: float
    ci_low: float | None
    ci_high: float | None
    better: bool
    significant: bool
    examples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compare(name: str, y: np.ndarray, cand: np.ndarray, other: np.ndarray, classes: int,
            evaluation: Evaluation, seed: int) -> Comparison:
    """Is the candidate better than `other` by evaluation.minImprovement, significantly?"""
    metric = evaluation.metric
    if metric == "accuracy":
        a, b = float((cand == y).mean()), float((other == y).mean())
        test = mcnemar_exact(y, cand, other)
        low = high = None
        # Two-sided test, and the direction must favour the candidate.
        significant = test["p_value"] < evaluation.significance_level and a > b
        p = test["p_value"]
    else:
        a, b = macro_f1(y, cand, classes), macro_f1(y, other, classes)
        boot = paired_bootstrap_f1(y, cand, other, classes, evaluation.bootstrap_samples,
                                   evaluation.significance_level, seed)
        low, high, p = boot["ci_low"], boot["ci_high"], boot["p_value"]
        significant = low > 0.0
    improvement = a - b
    return Comparison(name, metric, a, b, improvement, p, low, high,
                      better=improvement >= evaluation.min_improvement, significant=significant,
                      examples=len(y))


def tango_score_test(only_a: int, only_b: int, n: int, margin: float) -> float:
    """One-sided p-value of Tango's score test that p_a - p_b > -margin on n paired outcomes.

    Tango, T. (1998), "Equivalence test and confidence interval for the difference in
    proportions for the paired-sample design", Statistics in Medicine 17:891-908. `only_a` and
    `only_b` count the discordant pairs (only a correct, only b correct); the variance of their
    difference is taken at the restricted maximum-likelihood estimate of P(only b correct) under
    the null boundary p_a - p_b = -margin, which keeps the test's size close to nominal even for
    small benchmarks, unlike the Wald test. With margin 0 it is McNemar's score test.
    """
    if n <= 0:
        return 1.0
    delta = -margin
    a = 2.0 * n
    b = -only_a - only_b + (2.0 * n - only_a + only_b) * delta
    c = -only_b * delta * (1.0 - delta)
    q21 = (math.sqrt(max(b * b - 4.0 * a * c, 0.0)) - b) / (2.0 * a)
    variance = n * (2.0 * q21 + delta * (1.0 - delta))
    excess = only_a - only_b - n * delta
    if variance <= 0.0:  # no discordant pairs and no margin: nothing shows the difference
        return 1.0 if excess <= 0 else 0.0
    return float(stats.norm.sf(excess / math.sqrt(variance)))


@dataclass
class NonInferiority:
    """The regression guard: candidate minus other, and whether it is shown > -margin."""

    metric: str
    candidate: float
    other: float
    difference: float
    margin: float
    p_value: float
    """One-sided: the probability of so large a difference if the candidate were worse by the
    margin or more."""
    bound: float | None
    """The bootstrap's lower one-sided bound of the difference (macro-F1 only)."""
    passed: bool
    examples: int


def non_inferior(y: np.ndarray, cand: np.ndarray, other: np.ndarray, classes: int,
                 evaluation: Evaluation, seed: int) -> NonInferiority:
    """Is the candidate shown to be at most evaluation.nonInferiorityMargin worse than `other`,
    by a one-sided paired test at evaluation.significanceLevel?"""
    metric, margin = evaluation.metric, evaluation.non_inferiority_margin
    alpha = evaluation.significance_level
    a, b = metric_value(metric, y, cand, classes), metric_value(metric, y, other, classes)
    bound: float | None = None
    if metric == "accuracy":
        a_ok, b_ok = cand == y, other == y
        p = tango_score_test(int(np.sum(a_ok & ~b_ok)), int(np.sum(~a_ok & b_ok)), len(y),
                             margin)
    else:
        result = _f1_bootstrap(y, cand, other, classes, evaluation.bootstrap_samples,
                               1 - alpha, seed)
        distribution = np.asarray(result.bootstrap_distribution)
        bound = float(np.quantile(distribution, alpha))  # the lower one-sided percentile bound
        p = float(np.mean(distribution <= -margin))
    return NonInferiority(metric, a, b, a - b, margin, p, bound, passed=p < alpha,
                          examples=len(y))
