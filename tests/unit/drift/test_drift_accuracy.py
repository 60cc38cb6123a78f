"""Accuracy with late labels: join, cohorts, intervals, one-sided alerts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from statsmodels.stats.proportion import proportion_confint
from tailor.drift.accuracy import (
    ConfusionAccumulator,
    LabelIndex,
    bootstrap_interval,
    evaluate_accuracy,
    wilson_interval,
)
from tailor_contract.metrics import macro_f1


@pytest.mark.parametrize(("k", "n"), [(81, 263), (0, 10), (10, 10), (1, 2), (950, 1000)])
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_wilson_matches_statsmodels(k, n, level):
    lo, hi = wilson_interval(k, n, level)
    e_lo, e_hi = proportion_confint(k, n, alpha=1 - level, method="wilson")
    assert (lo, hi) == pytest.approx((e_lo, e_hi), abs=1e-12)


def test_wilson_published_value():
    # Newcombe (1998), Statistics in Medicine 17:857, example: 81/263 -> 0.2553 to 0.3662.
    lo, hi = wilson_interval(81, 263, 0.95)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)


def test_macro_f1_published_value():
    # scikit-learn's f1_score docs: y_true [0,1,2,0,1,2], y_pred [0,2,1,0,0,1] -> macro 0.2666...
    y_true = [0, 1, 2, 0, 1, 2]
    y_pred = [0, 2, 1, 0, 0, 1]
    confusion = np.zeros((3, 3), int)
    for t, p in zip(y_true, y_pred, strict=True):
        confusion[p, t] += 1
    assert macro_f1(confusion) == pytest.approx(0.26666666666666666)


def test_macro_f1_ignores_classes_never_seen():
    confusion = np.array([[5, 0, 0], [0, 5, 0], [0, 0, 0]])
    assert macro_f1(confusion) == 1.0


def test_bootstrap_interval_covers_the_population_value():
    rng = np.random.default_rng(7)
    cells = np.array([[0.40, 0.05, 0.03], [0.06, 0.25, 0.04], [0.02, 0.05, 0.10]])
    truth = macro_f1(cells)
    covered = 0
    trials = 200
    for _ in range(trials):
        sample = rng.multinomial(600, cells.ravel()).reshape(3, 3)
        lo, hi = bootstrap_interval(sample, 0.9, resamples=400, seed=int(rng.integers(1 << 30)))
        covered += lo <= truth <= hi
    assert 0.82 <= covered / trials <= 0.97  # nominal 0.9


def _labels(ids, labels, ts=None):
    cols = {"id": ids, "label": labels}
    if ts is not None:
        cols["timestamp"] = ts
    return LabelIndex.from_batches([pa.table(cols)])


def test_latest_label_wins_and_nulls_are_dropped():
    index = _labels(["a", "b", "a", "c"], ["x", "y", "z", None], [1.0, 1.0, 5.0, 1.0])
    got = dict(zip(index.table["id"].to_pylist(), index.table["label"].to_pylist(), strict=True))
    assert got == {"a": "z", "b": "y"}
    assert index.rows == 3


def test_join_counts_per_cohort_and_coverage():
    acc = ConfusionAccumulator(("cat", "dog"), cohort_seconds=3600)
    labels = _labels(["1", "2", "3", "9"], ["cat", "dog", "dog", "cat"])
    ids = pa.array(["1", "2", "3", "4"])
    predicted = pa.array(["cat", "cat", "dog", "bird"])
    ts = np.array([0, 10, 3600, 7300], np.int64) * 1_000_000
    acc.update(ids, predicted, ts, labels)
    assert acc.predictions == {0: 2, 3600: 1, 7200: 1}
    total = acc.total()
    assert total.sum() == 3  # "4" has no label yet; "9" is outside the window
    assert total[0, 0] == 1 and total[0, 1] == 1 and total[1, 1] == 1
    result = evaluate_accuracy(acc, threshold=0.9, min_labeled=1)
    assert [(c.start, c.predictions, c.labeled) for c in result.cohorts] == [
        (0, 2, 2),
        (3600, 1, 1),
        (7200, 1, 0),
    ]
    assert result.value == pytest.approx(2 / 3)


def test_unknown_classes_count_as_other():
    acc = ConfusionAccumulator(("a",), cohort_seconds=60)
    acc.update(pa.array(["1"]), pa.array(["zzz"]), None, _labels(["1"], ["a"]))
    assert acc.total().tolist() == [[0, 0], [1, 0]]


def _accuracy(correct, n, **kwargs):
    acc = ConfusionAccumulator(("a", "b"), cohort_seconds=3600)
    acc.matrices[0] = np.array([[correct, n - correct, 0], [0, 0, 0], [0, 0, 0]])
    acc.predictions[0] = n
    return evaluate_accuracy(acc, **kwargs)


def test_alert_needs_the_whole_interval_below_threshold():
    assert _accuracy(600, 1000, threshold=0.8).below_threshold
    # Below threshold, but the interval still reaches it: no alert.
    assert not _accuracy(76, 100, threshold=0.8).below_threshold


def test_alert_is_one_sided():
    assert not _accuracy(990, 1000, threshold=0.8).below_threshold


def test_alert_needs_the_minimum_labelled_count():
    result = _accuracy(50, 100, threshold=0.9, min_labeled=200)
    assert result.upper is not None and result.upper < 0.9
    assert not result.below_threshold and not result.sufficient_labels


def test_macro_f1_result_has_bootstrap_interval():
    result = _accuracy(600, 1000, threshold=0.9, metric="macro-f1")
    assert result.lower is not None and result.upper is not None and result.value is not None
    assert result.lower < result.value < result.upper
    assert result.below_threshold


def test_accumulators_merge():
    labels = _labels([str(i) for i in range(100)], ["a", "b"] * 50)
    ids = pa.array([str(i) for i in range(100)])
    predicted = pa.array(["a"] * 100)
    ts = np.arange(100, dtype=np.int64) * 60_000_000
    whole = ConfusionAccumulator(("a", "b"), 1800)
    whole.update(ids, predicted, ts, labels)
    left = ConfusionAccumulator(("a", "b"), 1800)
    right = ConfusionAccumulator(("a", "b"), 1800)
    left.update(ids[:37], predicted[:37], ts[:37], labels)
    right.update(ids[37:], predicted[37:], ts[37:], labels)
    merged = left.merge(right)
    assert merged.predictions == whole.predictions
    assert merged.matrices.keys() == whole.matrices.keys()
    for k in whole.matrices:
        assert (merged.matrices[k] == whole.matrices[k]).all()
