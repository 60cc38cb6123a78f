"""The data-quality gate: every check the guide asks for, with the spec's thresholds.

Rows are fed batch by batch, so the gate needs memory for a hash per row, not the rows. Each
check yields a finding with its value, threshold and the configured action; a violated Fail
check stops the run (permanent exit) with a message naming the check and the numbers, a
violated Warn check is recorded in data-quality.json and, through the termination message's
data_quality (QualityReport.outcome), in the DataQualityPassed condition.
A few checks always fail, because no threshold makes them trainable: missing or duplicate ids,
labels outside data.labels, fewer than two classes, too few examples.

Agreement between annotators uses maintained implementations: Cohen's kappa (two annotators,
statsmodels), Fleiss' kappa (a fixed number, statsmodels) and Krippendorff's alpha (nominal,
the krippendorff package) when some ratings are missing. The 0.667 / 0.8 defaults follow
Krippendorff's guidance for tentative / reliable conclusions.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import krippendorff
import numpy as np
from statsmodels.stats.inter_rater import aggregate_raters, cohens_kappa, fleiss_kappa
from tailor_contract.trainer_api import QUALITY_FAILED, QUALITY_PASSED, QUALITY_WARNINGS
from tailor_contract.trainingjob import Quality

from tailor_trainer.data.load import Batch, ColumnMap, id_digest

_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    return _SPACE.sub(" ", text).strip().casefold()


def is_empty(value: str | None) -> bool:
    return value is None or not value.strip()


@dataclass
class Finding:
    check: str
    status: str  # "pass", "warn" or "fail"
    message: str
    value: float | None = None
    threshold: float | None = None
    action: str = "Fail"


@dataclass
class QualityReport:
    passed: bool
    examples: int
    classes: int
    class_counts: dict[str, int]
    findings: list[Finding]
    agreement: dict[str, Any] | None = None
    split: dict[str, int] = field(default_factory=dict)
    data_fingerprint: str = ""
    additional: dict[str, Any] | None = None
    """data.additionalUris: the URIs, rows read and rows left out (ids already known)."""
    production: dict[str, Any] | None = None
    """data.productionUris: the same counts, and the rows held out as the recent holdout."""

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "warn"]

    def summary(self) -> str:
        bad = self.failures or self.warnings
        if not bad:
            return f"data quality passed: {self.examples} examples, {self.classes} classes"
        return "; ".join(f.message for f in bad)

    def outcome(self) -> tuple[str, str]:
        """The gate's outcome for the termination message (QUALITY_PASSED, QUALITY_WARNINGS or
        QUALITY_FAILED) and the violated checks, e.g. ``failed: ids; warnings: duplicates``."""
        failed = [f.check for f in self.failures]
        warned = [f.check for f in self.warnings]
        status = QUALITY_FAILED if failed else QUALITY_WARNINGS if warned else QUALITY_PASSED
        parts = [f"{name}: {', '.join(checks)}"
                 for name, checks in (("failed", failed), ("warnings", warned)) if checks]
        return status, "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["warnings"] = len(self.warnings)
        out["failed"] = [f.check for f in self.failures]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityReport:
        """A report written by `to_dict` (data-quality.json) read back."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["findings"] = [Finding(**f) for f in data.get("findings", [])]
        return cls(**known)


# --- agreement --------------------------------------------------------------------------------

def _codes(ratings: list[list[str | None]]) -> tuple[np.ndarray, list[str]]:
    """Ratings (rows x annotators) as float codes with NaN for missing, and the categories."""
    categories = sorted({r for row in ratings for r in row if r is not None})
    index = {c: i for i, c in enumerate(categories)}
    codes = np.array([[np.nan if r is None else float(index[r]) for r in row] for row in ratings],
                     dtype=float)
    return codes, categories


def agreement_coefficient(codes: np.ndarray, n_categories: int) -> tuple[str, float]:
    """The right coefficient for these ratings (rows x annotators, NaN = missing)."""
    missing = bool(np.isnan(codes).any())
    annotators = codes.shape[1]
    if missing:
        # Krippendorff wants annotators x units; units rated once carry no information.
        rated = (~np.isnan(codes)).sum(axis=1) >= 2
        value = krippendorff.alpha(reliability_data=codes[rated].T,
                                   level_of_measurement="nominal")
        return "krippendorff_alpha", float(value)
    ints = codes.astype(int)
    if annotators == 2:
        table = np.zeros((n_categories, n_categories))
        np.add.at(table, (ints[:, 0], ints[:, 1]), 1)
        return "cohen_kappa", float(cohens_kappa(table, return_results=False))
    counts, _ = aggregate_raters(ints, n_cat=n_categories)
    return "fleiss_kappa", float(fleiss_kappa(counts, method="fleiss"))


def measure_agreement(ratings: list[list[str | None]]) -> dict[str, Any]:
    """Overall and per-label (one label against the rest) agreement."""
    codes, categories = _codes(ratings)
    n_cat = max(len(categories), 2)
    method, overall = agreement_coefficient(codes, n_cat)
    per_label: dict[str, float | None] = {}
    for i, label in enumerate(categories):
        binary = np.where(np.isnan(codes), np.nan, (codes == i).astype(float))
        try:
            _, value = agreement_coefficient(binary, 2)
        except (ValueError, ZeroDivisionError):
            value = float("nan")
        per_label[label] = None if math.isnan(value) else round(value, 4)
    return {"method": method, "value": overall, "annotators": int(codes.shape[1]),
            "units": int(codes.shape[0]), "missing_ratings": int(np.isnan(codes).sum()),
            "per_label": per_label}


# --- the gate ---------------------------------------------------------------------------------

class QualityGate:
    """Feed batches with `add`, then `report`."""

    def __init__(self, quality: Quality, columns: ColumnMap, labels: list[str] | None) -> None:
        self.quality = quality
        self.columns = columns
        self.expected = labels
        self.rows = 0
        self.empty = 0
        self.missing_ids = 0
        self.id_hashes: set[bytes] = set()
        self.duplicate_ids = 0
        self.duplicate_id_examples: list[str] = []
        self.labels: Counter[str] = Counter()
        self.unknown: Counter[str] = Counter()
        self.inputs: dict[bytes, Counter[str]] = defaultdict(Counter)
        self.ratings: list[list[str | None]] = []
        self.data_hash = hashlib.sha256()

    def add(self, batch: Batch, *, annotated: bool = True) -> None:
        """Count a batch; ``annotated=False`` for rows of data.additionalUris, which have one
        label and no annotator columns, so agreement is measured on data.uri's rows alone."""
        cols = self.columns
        ids, inputs, labels = batch[cols.id], batch[cols.input], batch[cols.label]
        annotators = cols.annotators if annotated else ()
        annotator_values = [batch[a] for a in annotators]
        for i, (example_id, text, label) in enumerate(zip(ids, inputs, labels, strict=True)):
            self.rows += 1
            self.data_hash.update(f"{example_id}\x00{text}\x00{label}\x01".encode())
            if is_empty(example_id):
                self.missing_ids += 1
            else:
                key = id_digest(str(example_id))
                if key in self.id_hashes:
                    self.duplicate_ids += 1
                    if len(self.duplicate_id_examples) < 5:
                        self.duplicate_id_examples.append(str(example_id))
                self.id_hashes.add(key)
            if annotators:
                self.ratings.append([None if is_empty(v[i]) else str(v[i]).strip()
                                     for v in annotator_values])
            if is_empty(text) or is_empty(label):
                self.empty += 1
                continue
            assert text is not None and label is not None
            label = label.strip()
            if self.expected is not None and label not in self.expected:
                self.unknown[label] += 1
            self.labels[label] += 1
            digest = hashlib.blake2b(normalize(text).encode(), digest_size=16).digest()
            self.inputs[digest][label] += 1

    def _finding(self, check: str, violated: bool, action: str, message: str, value: float,
                 threshold: float, warn: bool = False) -> Finding:
        if not violated:
            status = "warn" if warn else "pass"
        else:
            status = "fail" if action == "Fail" else "warn"
        return Finding(check, status, message, round(value, 6), threshold, action)

    def report(self) -> QualityReport:
        labelled = self.rows - self.empty
        counts = dict(self.labels)
        for label in self.expected or []:
            counts.setdefault(label, 0)
        findings = [*self._count_checks(labelled), *self._duplicate_checks(labelled)]
        balance = self._balance_check(counts)
        if balance is not None:
            findings.append(balance)
        agreement = None
        if self.columns.annotators and self.ratings:
            agreement = measure_agreement(self.ratings)
            findings.append(self._agreement_check(agreement))
        passed = not any(f.status == "fail" for f in findings)
        return QualityReport(passed=passed, examples=labelled, classes=len(self.labels),
                             class_counts=dict(sorted(counts.items())), findings=findings,
                             agreement=agreement, data_fingerprint=self.data_hash.hexdigest())

    def _count_checks(self, labelled: int) -> list[Finding]:
        """Enough labelled rows, ids present and unique, few empty rows, known labels, and at
        least two classes."""
        q, n = self.quality, self.rows
        findings = [self._finding(
            "minExamples", labelled < q.min_examples, "Fail",
            f"{labelled} labelled examples, the minimum is {q.min_examples} "
            "(data.quality.minExamples)", labelled, q.min_examples)]
        if self.missing_ids or self.duplicate_ids:
            shown = ", ".join(repr(i) for i in self.duplicate_id_examples)
            findings.append(Finding(
                "ids", "fail",
                f"ids must be present and unique ({self.columns.id} column): "
                f"{self.missing_ids} rows without an id, {self.duplicate_ids} repeated ids"
                + (f" (e.g. {shown})" if shown else ""),
                float(self.missing_ids + self.duplicate_ids), 0.0))
        empty_share = self.empty / n if n else 0.0
        findings.append(self._finding(
            "emptyExamples", empty_share > q.empty_examples.max_fraction,
            q.empty_examples.action,
            f"{self.empty} of {n} rows ({empty_share:.1%}) have an empty input or label, the "
            f"maximum is {q.empty_examples.max_fraction:.1%} (data.quality.emptyExamples)",
            empty_share, q.empty_examples.max_fraction))
        if self.unknown:
            listed = ", ".join(f"{k!r} ({v})" for k, v in self.unknown.most_common(5))
            findings.append(Finding(
                "labelSet", "fail",
                f"{sum(self.unknown.values())} rows have labels outside data.labels "
                f"{self.expected}: {listed}", float(sum(self.unknown.values())), 0.0))
        classes = len(self.labels)
        if classes < 2:
            findings.append(Finding(
                "classes", "fail",
                f"the data has {classes} distinct label(s) "
                f"{sorted(self.labels)}; a classifier needs at least two", float(classes), 2.0))
        return findings

    def _duplicate_checks(self, labelled: int) -> list[Finding]:
        """Inputs that repeat (after normalisation), and those repeated under another label."""
        q = self.quality
        duplicates = sum(sum(c.values()) - len(c) for c in self.inputs.values())
        conflicting = sum(sum(c.values()) for c in self.inputs.values() if len(c) > 1)
        dup_share = duplicates / labelled if labelled else 0.0
        conflict_share = conflicting / labelled if labelled else 0.0
        return [self._finding(
            "duplicates", dup_share > q.duplicates.max_fraction, q.duplicates.action,
            f"{duplicates} of {labelled} examples ({dup_share:.1%}) repeat an earlier input, "
            f"the maximum is {q.duplicates.max_fraction:.1%} (data.quality.duplicates)",
            dup_share, q.duplicates.max_fraction), self._finding(
            "conflictingLabels", conflict_share > q.conflicting_labels.max_fraction,
            q.conflicting_labels.action,
            f"{conflicting} of {labelled} examples ({conflict_share:.1%}) share their input with "
            f"an example of another label, the maximum is "
            f"{q.conflicting_labels.max_fraction:.1%} (data.quality.conflictingLabels)",
            conflict_share, q.conflicting_labels.max_fraction)]

    def _balance_check(self, counts: dict[str, int]) -> Finding | None:
        """Every class with its minimum, and the largest/smallest ratio (None: < 2 classes)."""
        if not counts or len(self.labels) < 2:
            return None
        smallest = min(counts.values())
        ratio = max(counts.values()) / smallest if smallest else math.inf
        cb = self.quality.class_balance
        few = sorted(k for k, v in counts.items() if v < cb.min_per_class)
        return self._finding(
            "classBalance", bool(few) or ratio > cb.max_ratio, cb.action,
            f"class counts {dict(sorted(counts.items()))}: "
            + (f"{few} below the minimum of {cb.min_per_class} per class, " if few else "")
            + f"largest/smallest ratio {ratio:.1f}, the maximum is {cb.max_ratio:g} "
            "(data.quality.classBalance)", ratio if math.isfinite(ratio) else 1e9,
            cb.max_ratio)

    def _agreement_check(self, agreement: dict[str, Any]) -> Finding:
        value = agreement["value"]
        a = self.quality.agreement
        value_ok = not math.isnan(value)
        return self._finding(
            "agreement", (not value_ok) or value < a.minimum, a.action,
            f"inter-annotator agreement ({agreement['method']}) is "
            f"{value:.3f} over {agreement['units']} examples, the minimum is {a.minimum:g}"
            + (f" and {a.warn_below:g} passes without a warning" if value_ok else "")
            + " (data.quality.agreement)",
            value if value_ok else -1.0, a.minimum,
            warn=value_ok and value < a.warn_below)
