"""The per-feature parts of a reference profile (``tailor_contract.profile`` describes the
whole format): numeric histograms on quantile edges, category counts, and the numeric
summaries of a text column, with the functions that compute them from arrow or numpy data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_NUMERIC_BINS = 100
"""Fine quantile bins per numeric feature: KS and Wasserstein use them directly; PSI and
Jensen-Shannon merge them into about ten bins of equal reference mass."""
DEFAULT_MAX_CATEGORIES = 1000
TEXT_SUMMARIES = ("chars", "words", "non_ascii")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
FeatureType = Literal["numeric", "categorical", "text"]


class ProfileError(ValueError):
    """A profile that cannot be built or read (bad input, unknown format version)."""


@dataclass(frozen=True)
class NumericProfile:
    """Quantile-bin histogram of a numeric column: ``counts[i]`` in ``[edges[i], edges[i+1])``."""

    edges: FloatArray
    counts: IntArray
    count: int
    """Non-missing values."""
    missing: int
    """Null, NaN and infinite values (kept out of the histogram)."""
    mean: float
    std: float
    min: float
    max: float

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "numeric",
            "count": self.count,
            "missing": self.missing,
            "mean": _finite_or_none(self.mean),
            "std": _finite_or_none(self.std),
            "min": _finite_or_none(self.min),
            "max": _finite_or_none(self.max),
            "edges": [float(e) for e in self.edges],
            "counts": [int(c) for c in self.counts],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NumericProfile:
        edges = np.asarray(data["edges"], dtype=np.float64)
        counts = np.asarray(data["counts"], dtype=np.int64)
        if len(edges) != len(counts) + 1 and not (len(edges) == 0 and len(counts) == 0):
            raise ProfileError("a numeric profile needs len(edges) == len(counts) + 1")
        if len(edges) > 1 and not bool(np.all(np.diff(edges) > 0)):
            raise ProfileError("numeric profile edges must increase strictly")
        return cls(
            edges=edges,
            counts=counts,
            count=int(data["count"]),
            missing=int(data.get("missing", 0)),
            mean=_float_or_nan(data.get("mean")),
            std=_float_or_nan(data.get("std")),
            min=_float_or_nan(data.get("min")),
            max=_float_or_nan(data.get("max")),
        )


@dataclass(frozen=True)
class CategoricalProfile:
    """Counts of the most frequent categories; ``other`` counts every remaining value."""

    categories: dict[str, int]
    other: int
    count: int
    missing: int

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "categorical",
            "count": self.count,
            "missing": self.missing,
            "categories": dict(self.categories),
            "other": self.other,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CategoricalProfile:
        return cls(
            categories={str(k): int(v) for k, v in data["categories"].items()},
            other=int(data.get("other", 0)),
            count=int(data["count"]),
            missing=int(data.get("missing", 0)),
        )


@dataclass(frozen=True)
class TextProfile:
    """Numeric profiles of a text column's summary features (see TEXT_SUMMARIES)."""

    summaries: dict[str, NumericProfile]
    count: int
    missing: int

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "text",
            "count": self.count,
            "missing": self.missing,
            "summaries": {k: v.to_json() for k, v in self.summaries.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TextProfile:
        return cls(
            summaries={k: NumericProfile.from_json(v) for k, v in data["summaries"].items()},
            count=int(data["count"]),
            missing=int(data.get("missing", 0)),
        )


FeatureProfile = NumericProfile | CategoricalProfile | TextProfile


def numeric_profile(values: npt.ArrayLike, bins: int = DEFAULT_NUMERIC_BINS) -> NumericProfile:
    """Histogram of ``values`` on their own quantile edges (see the module docstring)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(x)
    missing = int(x.size - np.count_nonzero(finite))
    if missing == x.size:
        empty = np.zeros(0)
        return NumericProfile(empty, np.zeros(0, np.int64), 0, missing, *([math.nan] * 4))
    # One sort gives both the inverted-CDF quantiles (order statistics) and the bin counts. A
    # masked copy is sorted in place; otherwise np.sort copies (``x`` may be arrow's buffer).
    if missing:
        x = x[finite]
        x.sort()
    else:
        x = np.sort(x)
    n = x.size
    ranks = np.ceil(np.linspace(0.0, 1.0, bins + 1) * n).astype(np.int64) - 1
    quantiles = x[np.clip(ranks, 0, n - 1)]
    # The maximum keeps a bin of its own, so a discrete feature's top value is not merged with
    # the one below it; the closing edge one ulp above it makes every bin half-open.
    edges = np.append(np.unique(quantiles), np.nextafter(x[-1], np.inf))
    counts = np.diff(np.searchsorted(x, edges, side="left"))
    return NumericProfile(
        edges=edges,
        counts=counts.astype(np.int64),
        count=int(n),
        missing=missing,
        mean=float(x.mean()),
        std=float(x.std()),
        min=float(x[0]),
        max=float(x[-1]),
    )


def text_summaries(values: pa.Array | pa.ChunkedArray) -> dict[str, FloatArray]:
    """Per-row summary features of a text column (NaN where the text is null).

    ``chars`` is the length in Unicode code points, ``words`` the number of whitespace-separated
    tokens, ``non_ascii`` the share of code points outside ASCII (0 for an empty text): cheap
    signals of a change in input language, source or format that need no tokenizer.
    """
    arr = values.cast(pa.large_string())
    chars = pc.utf8_length(arr)
    words = pc.count_substring_regex(arr, r"\S+")
    non_ascii = pc.count_substring_regex(arr, r"[^\x00-\x7f]")
    chars_np = to_float(chars)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(chars_np > 0, to_float(non_ascii) / chars_np, 0.0)
    share = np.where(np.isnan(chars_np), np.nan, share)
    return {"chars": chars_np, "words": to_float(words), "non_ascii": share}


def text_profile(arr: pa.Array | pa.ChunkedArray, bins: int) -> TextProfile:
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise ProfileError("a text feature must hold strings")
    summaries = text_summaries(arr)
    return TextProfile(
        summaries={k: numeric_profile(v, bins) for k, v in summaries.items()},
        count=len(arr) - arr.null_count,
        missing=arr.null_count,
    )


def categorical_profile(
    arr: pa.Array | pa.ChunkedArray, max_categories: int
) -> CategoricalProfile:
    counts = value_counts(arr.cast(pa.string()))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ranked[:max_categories])
    return CategoricalProfile(
        categories=kept,
        other=sum(c for _, c in ranked[max_categories:]),
        count=len(arr) - arr.null_count,
        missing=arr.null_count,
    )


def value_counts(arr: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """Counts of each non-null value."""
    out: dict[str, int] = {}
    if len(arr) == 0:
        return out
    vc = pc.value_counts(arr)
    for value, count in zip(
        vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True
    ):
        if value is not None:
            out[str(value)] = out.get(str(value), 0) + int(count)
    return out


def as_arrow(values: Any) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    if isinstance(values, np.ndarray):
        return pa.array(values, from_pandas=True)
    return pa.array(list(values), from_pandas=True)


def is_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t))


def to_float(arr: pa.Array | pa.ChunkedArray) -> FloatArray:
    """Float64 numpy view of a numeric arrow column; nulls become NaN."""
    if not pa.types.is_float64(arr.type):
        arr = arr.cast(pa.float64())
    if isinstance(arr, pa.ChunkedArray):
        if arr.num_chunks == 1:
            arr = arr.chunk(0)
        else:
            return np.concatenate([c.to_numpy(zero_copy_only=False) for c in arr.chunks])
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _float_or_nan(x: Any) -> float:
    return math.nan if x is None else float(x)
