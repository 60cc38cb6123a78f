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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tailor_contract.profile_features import (
    DEFAULT_MAX_CATEGORIES,
    DEFAULT_NUMERIC_BINS,
    TEXT_SUMMARIES,
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    ProfileError,
    TextProfile,
    as_arrow,
    categorical_profile,
    is_numeric,
    numeric_profile,
    text_profile,
    text_summaries,
    to_float,
    value_counts,
)

FORMAT_VERSION = 1
PROFILE_KIND = "tailor.dev/reference-profile"


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
    text, categorical = set(text_features), set(categorical_features)
    unknown = (text | categorical) - set(features)
    if unknown:
        raise ProfileError(f"features not in the data: {sorted(unknown)}")
    classes_t = tuple(str(c) for c in classes)
    if len(set(classes_t)) != len(classes_t) or not classes_t:
        raise ProfileError("classes must be a non-empty list of distinct labels")
    pred_arr = as_arrow(predictions).cast(pa.string())
    samples = len(pred_arr)
    profiles: dict[str, FeatureProfile] = {}
    for name, values in features.items():
        arr = as_arrow(values)
        if len(arr) != samples:
            raise ProfileError(
                f"feature {name!r} has {len(arr)} values but there are {samples} predictions"
            )
        profiles[name] = _feature_profile(arr, name in text, name in categorical, numeric_bins,
                                          max_categories)
    return ReferenceProfile(
        samples=samples,
        classes=classes_t,
        features=profiles,
        predictions=_prediction_counts(pred_arr, classes_t),
        class_priors=_class_priors(labels, classes_t),
        confidence=_confidence(scores, samples, len(classes_t), numeric_bins),
        metadata=dict(metadata or {}),
    )


def _feature_profile(arr: pa.Array | pa.ChunkedArray, text: bool, categorical: bool, bins: int,
                     max_categories: int) -> FeatureProfile:
    if text:
        return text_profile(arr, bins)
    if categorical or not is_numeric(arr.type):
        return categorical_profile(arr, max_categories)
    return numeric_profile(to_float(arr), bins)


def _prediction_counts(predictions: pa.Array | pa.ChunkedArray,
                       classes: tuple[str, ...]) -> dict[str, int]:
    """Counts of each class among the predictions, zeros included; others are refused."""
    counts = value_counts(predictions)
    per_class = {c: counts.pop(c, 0) for c in classes}
    if counts:
        raise ProfileError(f"predictions outside classes: {sorted(counts)[:5]}")
    return per_class


def _class_priors(labels: Sequence[Any] | pa.Array | npt.ArrayLike | None,
                  classes: tuple[str, ...]) -> dict[str, float] | None:
    if labels is None:
        return None
    counts = value_counts(as_arrow(labels).cast(pa.string()))
    labelled = sum(counts.values())
    return {c: counts.get(c, 0) / labelled for c in classes} if labelled else None


def _confidence(scores: npt.ArrayLike | None, samples: int, classes: int,
                bins: int) -> NumericProfile | None:
    """The top score's distribution, when class scores were given."""
    if scores is None:
        return None
    score_arr = np.asarray(scores, dtype=np.float64)
    if score_arr.ndim != 2 or score_arr.shape != (samples, classes):
        raise ProfileError("scores must have shape (samples, len(classes))")
    return numeric_profile(score_arr.max(axis=1), bins)


__all__ = [
    "DEFAULT_MAX_CATEGORIES",
    "DEFAULT_NUMERIC_BINS",
    "FORMAT_VERSION",
    "PROFILE_KIND",
    "TEXT_SUMMARIES",
    "CategoricalProfile",
    "FeatureProfile",
    "NumericProfile",
    "ProfileError",
    "ReferenceProfile",
    "TextProfile",
    "build_reference_profile",
    "numeric_profile",
    "text_summaries",
]
