"""The reference profile: the training-time distribution a DriftMonitor compares production with.

The trainer writes it as ``reference-profile.json`` beside the model; the operator reads it. It
holds only aggregates (never rows), so it is small (a few KiB per feature) and safe to keep:

- numeric features: reference-quantile bin edges and the reference count in each bin, plus
  summary moments (mean and standard deviation normalise the Wasserstein distance);
- categorical features: counts of the most frequent categories and of the rest;
- text features: the same numeric profile for summary features of each text (length in
  characters, in whitespace-separated words, share of non-ASCII characters), which are
  compared as numeric features named ``<feature>:chars``, ``<feature>:words`` and
  ``<feature>:non_ascii``;
- the model's predicted-label distribution on the reference data, the class priors (true
  label shares) and, when scores are given, the distribution of the top score (confidence).

Bins are half-open, ``[e[i-1], e[i])``; the last edge lies one ulp above the reference maximum,
so every reference value falls inside the edges and values outside them are production values
the model never saw. Edges are attained reference values (inverted-CDF quantiles), so discrete
features keep one bin per frequent value.

The format is versioned (``formatVersion``); readers refuse versions they do not know.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

FORMAT_VERSION = 1
PROFILE_KIND = "tailor.dev/reference-profile"
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


@dataclass(frozen=True)
class ReferenceProfile:
    """What the model saw at training time; see the module docstring for the contents."""

    samples: int
    classes: tuple[str, ...]
    features: dict[str, FeatureProfile]
    predictions: dict[str, int]
    """Predicted-label counts on the reference data (every class present, zeros included)."""
    class_priors: dict[str, float] | None = None
    confidence: NumericProfile | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    """Free-form provenance set by the writer (model, run id, data fingerprint)."""

    def to_json(self) -> dict[str, Any]:
        """The JSON document (``reference-profile.json``); ``json.dumps`` it as is."""
        out: dict[str, Any] = {
            "formatVersion": FORMAT_VERSION,
            "kind": PROFILE_KIND,
            "samples": self.samples,
            "classes": list(self.classes),
            "features": {name: f.to_json() for name, f in self.features.items()},
            "predictions": dict(self.predictions),
            "classPriors": dict(self.class_priors) if self.class_priors is not None else None,
            "confidence": self.confidence.to_json() if self.confidence is not None else None,
            "metadata": dict(self.metadata),
        }
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        """Parse a document written by ``to_json``; refuses unknown format versions."""
        version = data.get("formatVersion")
        if version != FORMAT_VERSION:
            raise ProfileError(
                f"reference profile formatVersion {version!r} is not supported "
                f"(this operator reads version {FORMAT_VERSION})"
            )
        features: dict[str, FeatureProfile] = {}
        for name, raw in data["features"].items():
            kind = raw.get("type")
            if kind == "numeric":
                features[name] = NumericProfile.from_json(raw)
            elif kind == "categorical":
                features[name] = CategoricalProfile.from_json(raw)
            elif kind == "text":
                features[name] = TextProfile.from_json(raw)
            else:
                raise ProfileError(f"feature {name!r} has unknown type {kind!r}")
        priors = data.get("classPriors")
        confidence = data.get("confidence")
        return cls(
            samples=int(data["samples"]),
            classes=tuple(str(c) for c in data["classes"]),
            features=features,
            predictions={str(k): int(v) for k, v in data["predictions"].items()},
            class_priors=(
                {str(k): float(v) for k, v in priors.items()} if priors is not None else None
            ),
            confidence=NumericProfile.from_json(confidence) if confidence is not None else None,
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
        )

    def compared_columns(self) -> dict[str, NumericProfile | CategoricalProfile]:
        """Every column a check compares, text features expanded into their summaries."""
        out: dict[str, NumericProfile | CategoricalProfile] = {}
        for name, feature in self.features.items():
            if isinstance(feature, TextProfile):
                for summary, numeric in feature.summaries.items():
                    out[f"{name}:{summary}"] = numeric
            else:
                out[name] = feature
        return out


def build_reference_profile(
    features: Mapping[str, Any],
    predictions: Sequence[Any] | pa.Array | npt.ArrayLike,
    *,
    classes: Sequence[str],
    labels: Sequence[Any] | pa.Array | npt.ArrayLike | None = None,
    scores: npt.ArrayLike | None = None,
    text_features: Iterable[str] = (),
    categorical_features: Iterable[str] = (),
    numeric_bins: int = DEFAULT_NUMERIC_BINS,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    metadata: Mapping[str, str] | None = None,
) -> ReferenceProfile:
    """Profile the reference data (the validation split and the model's predictions on it).

    ``features`` maps column names to array-likes (numpy arrays, lists, pyarrow arrays) of equal
    length. A column's type is inferred — numbers are numeric, strings categorical — unless it is
    named in ``text_features`` (free text, profiled by summary features) or in
    ``categorical_features`` (e.g. integer codes). ``predictions`` are the predicted labels,
    ``labels`` the true ones (for the class priors), ``scores`` an ``(n, len(classes))`` array of
    class scores (the top score's distribution is kept).
    """
    if numeric_bins < 1:
        raise ProfileError("numeric_bins must be at least 1")
    text = set(text_features)
    categorical = set(categorical_features)
    unknown = (text | categorical) - set(features)
    if unknown:
        raise ProfileError(f"features not in the data: {sorted(unknown)}")
    classes_t = tuple(str(c) for c in classes)
    if len(set(classes_t)) != len(classes_t) or not classes_t:
        raise ProfileError("classes must be a non-empty list of distinct labels")
    pred_arr = _as_arrow(predictions).cast(pa.string())
    samples = len(pred_arr)

    profiles: dict[str, FeatureProfile] = {}
    for name, values in features.items():
        arr = _as_arrow(values)
        if len(arr) != samples:
            raise ProfileError(
                f"feature {name!r} has {len(arr)} values but there are {samples} predictions"
            )
        if name in text:
            profiles[name] = _text_profile(arr, numeric_bins)
        elif name in categorical or not _is_numeric(arr.type):
            profiles[name] = _categorical_profile(arr, max_categories)
        else:
            profiles[name] = numeric_profile(_to_float(arr), numeric_bins)

    counts = _value_counts(pred_arr)
    prediction_counts = {c: counts.pop(c, 0) for c in classes_t}
    if counts:
        raise ProfileError(f"predictions outside classes: {sorted(counts)[:5]}")
    priors = None
    if labels is not None:
        label_arr = _as_arrow(labels).cast(pa.string())
        label_counts = _value_counts(label_arr)
        labelled = sum(label_counts.values())
        if labelled:
            priors = {c: label_counts.get(c, 0) / labelled for c in classes_t}
    confidence = None
    if scores is not None:
        score_arr = np.asarray(scores, dtype=np.float64)
        if score_arr.ndim != 2 or score_arr.shape != (samples, len(classes_t)):
            raise ProfileError("scores must have shape (samples, len(classes))")
        confidence = numeric_profile(score_arr.max(axis=1), numeric_bins)
    return ReferenceProfile(
        samples=samples,
        classes=classes_t,
        features=profiles,
        predictions=prediction_counts,
        class_priors=priors,
        confidence=confidence,
        metadata=dict(metadata or {}),
    )


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
    chars_np = _to_float(chars)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(chars_np > 0, _to_float(non_ascii) / chars_np, 0.0)
    share = np.where(np.isnan(chars_np), np.nan, share)
    return {"chars": chars_np, "words": _to_float(words), "non_ascii": share}


def _text_profile(arr: pa.Array | pa.ChunkedArray, bins: int) -> TextProfile:
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise ProfileError("a text feature must hold strings")
    summaries = text_summaries(arr)
    return TextProfile(
        summaries={k: numeric_profile(v, bins) for k, v in summaries.items()},
        count=len(arr) - arr.null_count,
        missing=arr.null_count,
    )


def _categorical_profile(
    arr: pa.Array | pa.ChunkedArray, max_categories: int
) -> CategoricalProfile:
    counts = _value_counts(arr.cast(pa.string()))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ranked[:max_categories])
    return CategoricalProfile(
        categories=kept,
        other=sum(c for _, c in ranked[max_categories:]),
        count=len(arr) - arr.null_count,
        missing=arr.null_count,
    )


def _value_counts(arr: pa.Array | pa.ChunkedArray) -> dict[str, int]:
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


def _as_arrow(values: Any) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    if isinstance(values, np.ndarray):
        return pa.array(values, from_pandas=True)
    return pa.array(list(values), from_pandas=True)


def _is_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t))


def _to_float(arr: pa.Array | pa.ChunkedArray) -> FloatArray:
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
