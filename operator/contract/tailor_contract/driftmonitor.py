"""Typed ``DriftMonitor`` spec: parses and defaults exactly as crds/driftmonitors.yaml does, and
the record of a retrain it starts (``RetrainTrigger``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from tailor_contract.common import (
    DNS_1035_LABEL_PATTERN,
    ApiModel,
    ColumnName,
    Metric,
    S3Uri,
    Storage,
    Unique,
    duration_bounds,
    parse_duration,
)
from tailor_contract.constants import MAX_TRAININGJOB_NAME, TRIGGER_ACCURACY_BELOW_THRESHOLD
from tailor_contract.trainingjob import TrainingJobSpec

Trigger = Literal["AccuracyBelowThreshold", "DriftDetected", "Alert"]

AUTO_MAX_RATE = 0.1
"""The largest ``threshold`` a drift check with method ``auto`` accepts: there it is a false-alarm
rate per check, and a value above this (such as 0.25, a PSI threshold of the explicit methods)
would let a healthy window alarm in up to that share of checks."""


def _auto_rate_error(check: str, method: str, threshold: float | None) -> str | None:
    """The CRD's rule on ``checks.featureDrift`` and ``checks.predictionDrift``."""
    if method == "auto" and threshold is not None and threshold > AUTO_MAX_RATE:
        return (
            f"checks.{check}.threshold must be at most 0.1 with method auto, where it is a "
            "false-alarm rate per check (default 0.005); a PSI or distance threshold needs an "
            "explicit method"
        )
    return None


class MonitoredModel(ApiModel):
    """The model to watch: a TrainingJob's promoted run, or an explicit reference profile."""

    training_job: (
        Annotated[
            str,
            Field(min_length=1, max_length=MAX_TRAININGJOB_NAME, pattern=DNS_1035_LABEL_PATTERN),
        ]
        | None
    ) = None
    profile_uri: S3Uri | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> MonitoredModel:
        if (self.training_job is None) == (self.profile_uri is None):
            raise ValueError("set exactly one of model.trainingJob and model.profileUri")
        return self


class LogColumns(ApiModel):
    id: ColumnName = "id"
    timestamp: ColumnName = "timestamp"
    prediction: ColumnName = "prediction"
    label: ColumnName = "label"


class Production(ApiModel):
    """Where production's prediction logs and late labels are, and the window compared."""

    predictions_uri: S3Uri
    ground_truth_uri: S3Uri | None = None
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    columns: LogColumns = Field(default_factory=LogColumns)
    window: Annotated[str, Field(max_length=32), duration_bounds("1m", "2160h")] = "24h"
    min_samples: Annotated[int, Field(ge=1, le=1000000000)] = 500
    min_labeled: Annotated[int, Field(ge=1, le=1000000000)] = 200


class AccuracyCheck(ApiModel):
    """One-sided: only an interval wholly below threshold counts as a drop."""

    metric: Metric = "accuracy"
    threshold: Annotated[float, Field(gt=0, le=1)]
    confidence_level: Annotated[float, Field(ge=0.5, le=0.999)] = 0.95


class FeatureDriftCheck(ApiModel):
    """How input features are compared with the reference profile (docs/drift.md, Methods)."""

    method: Literal["auto", "psi", "wasserstein", "jensen-shannon", "ks", "chi-square"] = "auto"
    """``auto``: a two-sample test per feature (binned KS for numbers, chi-square for
    categories) AND an effect-size floor (normalised Wasserstein >= 0.1 sd, Jensen-Shannon
    >= 0.1), the same rule at every window size: power grows with the window, and a healthy
    window reaches ``driftedShare`` in at most 0.5% of checks (1% with prediction drift).
    The other methods are that statistic against ``threshold``."""
    threshold: Annotated[float, Field(gt=0, le=100)] | None = None
    """``auto``: the features' false-alarm rate per check (default 0.005). Otherwise the
    method's threshold: PSI 0.25, Wasserstein and Jensen-Shannon 0.1 above which a feature
    drifts; ks and chi-square 0.05 family-wise (Bonferroni) below which a p-value drifts."""
    drifted_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    calibrate: bool = False
    """Thresholds from a bootstrap of the reference at the window's size: distance methods at
    a 1% false-alarm rate per feature; ``auto`` compares the floor's distance with the larger
    of its floor and its calibrated threshold at ``auto``'s rate. ks and chi-square ignore it."""
    features: Annotated[list[ColumnName], Field(min_length=1, max_length=1000), Unique] | None = (
        None
    )

    @model_validator(mode="after")
    def _auto_threshold_is_a_rate(self) -> FeatureDriftCheck:
        """The CRD's CEL rule on checks.featureDrift."""
        error = _auto_rate_error("featureDrift", self.method, self.threshold)
        if error:
            raise ValueError(error)
        return self


class PredictionDriftCheck(ApiModel):
    method: Literal["auto", "psi", "jensen-shannon", "chi-square"] = "auto"
    """``auto``: chi-square test AND Jensen-Shannon distance >= 0.1, at every window size."""
    threshold: Annotated[float, Field(gt=0, le=100)] | None = None
    """``auto``: the false-alarm rate per check (default 0.005); otherwise the method's
    customary threshold (PSI 0.25, Jensen-Shannon 0.1, chi-square p < 0.05)."""

    @model_validator(mode="after")
    def _auto_threshold_is_a_rate(self) -> PredictionDriftCheck:
        """The CRD's CEL rule on checks.predictionDrift."""
        error = _auto_rate_error("predictionDrift", self.method, self.threshold)
        if error:
            raise ValueError(error)
        return self


class Checks(ApiModel):
    accuracy: AccuracyCheck | None = None
    feature_drift: FeatureDriftCheck = Field(default_factory=FeatureDriftCheck)
    prediction_drift: PredictionDriftCheck = Field(default_factory=PredictionDriftCheck)


class TemplateMetadata(ApiModel):
    labels: (
        Annotated[dict[str, Annotated[str, Field(max_length=63)]], Field(max_length=64)] | None
    ) = None
    annotations: (
        Annotated[dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=64)] | None
    ) = None


class TrainingJobTemplate(ApiModel):
    """The TrainingJob a retrain creates (its name is ``<monitor>-retrain-<8 hex>``)."""

    metadata: TemplateMetadata | None = None
    spec: TrainingJobSpec


def _default_triggers() -> list[Trigger]:
    return ["AccuracyBelowThreshold", "Alert"]


class Retrain(ApiModel):
    enabled: bool = True
    triggers: Annotated[list[Trigger], Field(max_length=3), Unique] = Field(
        default_factory=_default_triggers
    )
    cooldown: Annotated[str, Field(max_length=32), duration_bounds(None, "8760h")] = "6h"
    concurrency_policy: Literal["Forbid", "Allow"] = "Forbid"
    include_production_data: bool = True
    template: TrainingJobTemplate | None = None


class DriftMonitorSpec(ApiModel):
    """``DriftMonitor.spec``."""

    model: MonitoredModel
    production: Production
    storage: Storage = Field(default_factory=Storage)
    interval: Annotated[str, Field(max_length=32), duration_bounds("10s", "24h")] = "5m"
    checks: Checks = Field(default_factory=Checks)
    retrain: Retrain = Field(default_factory=Retrain)

    @model_validator(mode="after")
    def _consistent(self) -> DriftMonitorSpec:
        """The CRD's spec-level CEL rules (see x-kubernetes-validations on spec)."""
        if self.checks.accuracy is not None and self.production.ground_truth_uri is None:
            raise ValueError(
                "checks.accuracy needs production.groundTruthUri, the late-arriving labels"
            )
        if parse_duration(self.production.window) < parse_duration(self.interval):
            raise ValueError("production.window must be at least as long as interval")
        if (
            self.retrain.enabled
            and self.model.training_job is None
            and self.retrain.template is None
        ):
            raise ValueError(
                "retrain needs retrain.template or model.trainingJob (whose spec is cloned); set "
                "retrain.enabled to false to only monitor"
            )
        return self

    def retrains_on(self, trigger: str) -> bool:
        """Whether a trigger may start a retrain (an accuracy trigger needs an accuracy check)."""
        if not self.retrain.enabled or trigger not in self.retrain.triggers:
            return False
        return trigger != TRIGGER_ACCURACY_BELOW_THRESHOLD or self.checks.accuracy is not None


@dataclass(frozen=True)
class RetrainTrigger:
    """Why a retrain starts. Its ``identity`` (the check's window and reason, or an alert's
    fingerprint and start) names the retraining TrainingJob (``names.retrain_job_name``), so a
    retried or restarted operator creates the same object again. The monitor's
    ``status.lastRetrain`` records it (``record``) before the TrainingJob exists; the
    TrainingJob carries it as lineage in its ``tailor.dev/trigger`` annotation
    (``annotation``), which the TrainingJob controller copies into ``status.triggeredBy``.
    """

    reason: str
    """A TRIGGER_* value: AccuracyBelowThreshold, DriftDetected or Alert."""
    identity: str
    message: str
    window_start: str | None = None
    """RFC 3339, as in ``status.window``: the data the trigger judged."""
    window_end: str | None = None

    def record(self, name: str, time: str) -> dict[str, str]:
        """``status.lastRetrain``: enough to create the same TrainingJob (and the same
        production data) again after a restart."""
        record = {"name": name, "reason": self.reason, "time": time, "trigger": self.identity}
        if self.window_start:
            record["windowStart"] = self.window_start
        if self.window_end:
            record["windowEnd"] = self.window_end
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any], message: str) -> RetrainTrigger:
        """The trigger a ``status.lastRetrain`` recorded (its message is not kept there)."""
        return cls(str(record["reason"]), str(record["trigger"]), message,
                   record.get("windowStart"), record.get("windowEnd"))

    def annotation(self, monitor: str, time: str) -> dict[str, Any]:
        """The ``tailor.dev/trigger`` annotation's document (``annotation_text`` writes it)."""
        return {"driftMonitor": monitor, "reason": self.reason, "message": self.message[:1024],
                "windowStart": self.window_start, "windowEnd": self.window_end, "time": time}


def annotation_text(document: Mapping[str, Any]) -> str:
    """A ``tailor.dev/trigger`` annotation's value: compact JSON."""
    return json.dumps(document, separators=(",", ":"))
