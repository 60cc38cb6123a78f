"""Production accuracy from late-arriving labels.

Labels arrive hours or days after the predictions they judge, so a window's predictions are
joined with whatever ground truth exists by id. Confusion counts are kept per prediction-time
cohort: recent cohorts have few labels yet, and their coverage says so. The metric is measured
on the labelled predictions only, with a confidence interval, and an alert is one-sided: it
needs enough labelled predictions and an interval wholly below the threshold, so an improvement
or a noisy small sample never fires it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from tailor_contract.metrics import macro_f1, macro_f1_many

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

OTHER_CLASS = "__other__"
"""Where predictions or labels outside the profile's classes are counted."""


@dataclass(frozen=True)
class LabelIndex:
    """Ground truth deduplicated by id (the label with the latest timestamp wins)."""

    table: pa.Table
    """Columns ``id`` (string) and ``label`` (string), one row per id."""
    rows: int
    """Label rows read, duplicates included."""

    @classmethod
    def from_batches(
        cls,
        batches: Iterable[pa.RecordBatch | pa.Table],
        *,
        id_column: str = "id",
        label_column: str = "label",
        timestamp_column: str | None = "timestamp",
    ) -> LabelIndex:
        """Read label batches; ``timestamp_column`` (if present) orders corrections of a label."""
        parts: list[pa.Table] = []
        for batch in batches:
            t = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            for required in (id_column, label_column):
                if required not in t.column_names:
                    raise KeyError(f"ground truth has no column {required!r}")
            cols = {
                "id": t[id_column].cast(pa.string()),
                "label": t[label_column].cast(pa.string()),
            }
            if timestamp_column and timestamp_column in t.column_names:
                cols["ts"] = pa.chunked_array(
                    [pa.array(epoch_micros(t[timestamp_column]), pa.int64())]
                )
            else:
                cols["ts"] = pa.chunked_array([pa.array(np.zeros(t.num_rows, np.int64))])
            parts.append(pa.table(cols))
        if not parts:
            empty = pa.table({"id": pa.array([], pa.string()), "label": pa.array([], pa.string())})
            return cls(empty, 0)
        table = pa.concat_tables(parts)
        table = table.filter(pc.and_(pc.is_valid(table["id"]), pc.is_valid(table["label"])))
        rows = table.num_rows
        # Ordered by time, "last" per id is the latest label (ordered aggregation needs one thread).
        table = table.sort_by([("ts", "ascending")])
        latest = table.group_by("id", use_threads=False).aggregate([("label", "last")])
        return cls(latest.rename_columns(["id", "label"]), rows)

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def join(self, ids: pa.Array | pa.ChunkedArray) -> tuple[IntArray, pa.ChunkedArray]:
        """The inner join of a batch's ids with the labels, in the batch's row order.

        Returns the positions (in ``ids``) of the rows that have a label and those labels, so a
        caller takes whatever other columns it needs from its own batch (accuracy takes the
        predictions, a retrain's production data the model's inputs).
        """
        n = len(ids)
        left = pa.table({"id": ids.cast(pa.string()), "row": pa.array(np.arange(n), pa.int64())})
        joined = left.join(self.table, keys="id", join_type="inner", use_threads=True)
        if joined.num_rows == 0:
            return np.zeros(0, np.int64), pa.chunked_array([], pa.string())
        joined = joined.sort_by("row")
        rows = np.asarray(joined["row"].to_numpy(), dtype=np.int64)
        return rows, joined["label"]


@dataclass
class ConfusionAccumulator:
    """Confusion counts per prediction-time cohort; mergeable by addition.

    ``matrices[cohort][i, j]`` counts predictions of class ``i`` whose label is class ``j``
    (the last index is OTHER_CLASS); ``predictions[cohort]`` counts every prediction, labelled
    or not, so coverage is known per cohort. A cohort key is the cohort's start in seconds since
    the epoch.
    """

    classes: tuple[str, ...]
    cohort_seconds: int
    matrices: dict[int, IntArray] = field(default_factory=dict)
    predictions: dict[int, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.classes) + 1

    def update(
        self,
        ids: pa.Array | pa.ChunkedArray,
        predicted: pa.Array | pa.ChunkedArray,
        timestamps_us: npt.NDArray[np.int64] | None,
        labels: LabelIndex,
    ) -> None:
        """Count one batch of in-window predictions and join it with the labels."""
        n = len(ids)
        if n == 0:
            return
        step = self.cohort_seconds * 1_000_000
        cohort = (
            (timestamps_us // step) * self.cohort_seconds
            if timestamps_us is not None
            else np.zeros(n, np.int64)
        )
        keys, per_cohort = np.unique(cohort, return_counts=True)
        for k, c in zip(keys.tolist(), per_cohort.tolist(), strict=True):
            self.predictions[k] = self.predictions.get(k, 0) + int(c)
        if len(labels) == 0:
            return
        rows, truth = labels.join(ids)
        if rows.size == 0:
            return
        p = self._codes(predicted.take(pa.array(rows)))
        t = self._codes(truth)
        coh = cohort[rows]
        size = self.size
        cell = p * size + t
        for k in np.unique(coh).tolist():
            counts = np.bincount(cell[coh == k], minlength=size * size).reshape(size, size)
            prev = self.matrices.get(k)
            self.matrices[k] = counts if prev is None else prev + counts

    def merge(self, other: ConfusionAccumulator) -> ConfusionAccumulator:
        """Add another partial window's counts into this one (in place; returns self)."""
        if other.classes != self.classes or other.cohort_seconds != self.cohort_seconds:
            raise ValueError("can only merge accumulators with the same classes and cohorts")
        for k, m in other.matrices.items():
            prev = self.matrices.get(k)
            self.matrices[k] = m.copy() if prev is None else prev + m
        for k, c in other.predictions.items():
            self.predictions[k] = self.predictions.get(k, 0) + c
        return self

    def total(self) -> IntArray:
        out = np.zeros((self.size, self.size), np.int64)
        for m in self.matrices.values():
            out += m
        return out

    def _codes(self, values: pa.Array | pa.ChunkedArray) -> IntArray:
        idx = pc.index_in(values.cast(pa.string()), value_set=pa.array(self.classes, pa.string()))
        return np.asarray(idx.fill_null(len(self.classes)).to_numpy(), dtype=np.int64)


@dataclass(frozen=True)
class CohortAccuracy:
    start: int
    """Cohort start, seconds since the epoch."""
    predictions: int
    labeled: int
    value: float | None
    """The metric on this cohort's labelled predictions (None without labels)."""

    @property
    def coverage(self) -> float:
        return self.labeled / self.predictions if self.predictions else 0.0


@dataclass(frozen=True)
class AccuracyResult:
    metric: str
    value: float | None
    lower: float | None
    upper: float | None
    confidence_level: float
    threshold: float | None
    samples: int
    """Labelled predictions the metric was measured on."""
    min_labeled: int
    below_threshold: bool
    """The one-sided alert: enough labels and the whole interval below threshold."""
    cohorts: tuple[CohortAccuracy, ...]

    @property
    def sufficient_labels(self) -> bool:
        return self.samples >= self.min_labeled


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (two-sided, at ``confidence``).

    Unlike the normal (Wald) interval it stays inside [0, 1] and keeps close to its nominal
    coverage for small samples and proportions near 0 or 1, as accuracy often is.
    """
    if n <= 0:
        return 0.0, 1.0
    from scipy import stats as sps  # imported when needed: see tailor.drift.stats

    z = float(sps.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(
    confusion: npt.ArrayLike,
    confidence: float = 0.95,
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of macro-F1, resampling labelled predictions.

    Resampling predictions with replacement is the same as drawing the confusion cells from a
    multinomial with the observed shares, which costs nothing per prediction. Seeded, so a check
    repeated on the same data reports the same interval.
    """
    c = np.asarray(confusion, dtype=np.int64)
    n = int(c.sum())
    if n == 0:
        return 0.0, 1.0
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, c.ravel() / n, size=resamples).reshape(resamples, *c.shape)
    values = macro_f1_many(draws.astype(np.float64))
    alpha = 1 - confidence
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def evaluate_accuracy(
    confusions: ConfusionAccumulator,
    *,
    metric: str = "accuracy",
    threshold: float | None = None,
    confidence_level: float = 0.95,
    min_labeled: int = 200,
) -> AccuracyResult:
    """The window's metric, its interval and the one-sided alert verdict."""
    if metric not in ("accuracy", "macro-f1"):
        raise ValueError(f"unknown metric {metric!r}")
    total = confusions.total()
    n = int(total.sum())
    value: float | None = None
    lower: float | None = None
    upper: float | None = None
    if n:
        if metric == "accuracy":
            correct = int(np.trace(total))
            value = correct / n
            lower, upper = wilson_interval(correct, n, confidence_level)
        else:
            value = macro_f1(total)
            lower, upper = bootstrap_interval(total, confidence_level)
    below = bool(
        threshold is not None and upper is not None and n >= min_labeled and upper < threshold
    )
    cohorts = []
    for start in sorted(set(confusions.predictions) | set(confusions.matrices)):
        m = confusions.matrices.get(start)
        labeled = int(m.sum()) if m is not None else 0
        cohort_value = None
        if m is not None and labeled:
            cohort_value = float(np.trace(m) / labeled) if metric == "accuracy" else macro_f1(m)
        cohorts.append(
            CohortAccuracy(start, confusions.predictions.get(start, 0), labeled, cohort_value)
        )
    return AccuracyResult(
        metric=metric,
        value=value,
        lower=lower,
        upper=upper,
        confidence_level=confidence_level,
        threshold=threshold,
        samples=n,
        min_labeled=min_labeled,
        below_threshold=below,
        cohorts=tuple(cohorts),
    )


def epoch_micros(column: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.int64]:
    """Microseconds since the epoch (UTC) of a timestamp column.

    Accepts arrow timestamps (naive ones are taken as UTC), ISO-8601 strings (with or without a
    zone offset) and numbers (seconds since the epoch), the forms JSONL and Parquet logs use.
    """
    t = column.type
    if pa.types.is_timestamp(t):
        as_us = column.cast(pa.timestamp("us", tz=t.tz)) if t.unit != "us" else column
        ints = as_us.cast(pa.int64())
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            ints = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        except pa.ArrowInvalid:
            ints = column.cast(pa.timestamp("us")).cast(pa.int64())
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        # Fractional seconds: truncate to whole microseconds (a safe cast would refuse).
        ints = pc.cast(pc.multiply(column.cast(pa.float64()), 1_000_000.0), pa.int64(),
                       safe=False)
    elif pa.types.is_date(t):
        ints = column.cast(pa.timestamp("us")).cast(pa.int64())
    else:
        raise TypeError(f"cannot read timestamps of type {t}")
    filled = ints.fill_null(np.iinfo(np.int64).min)
    if isinstance(filled, pa.ChunkedArray):
        if filled.num_chunks == 0:
            return np.zeros(0, np.int64)
        return np.concatenate([c.to_numpy() for c in filled.chunks]).astype(np.int64, copy=False)
    return np.asarray(filled.to_numpy(), dtype=np.int64)
