"""Typed ``TrainingJob`` spec: parses and defaults exactly as crds/trainingjobs.yaml does.

``TrainingJobSpec.model_validate(obj["spec"])`` refuses what the API server refuses (types,
ranges, patterns, enums and the CEL rules that look at one object; not the transition rules,
which need the old object) and fills in the same defaults. tests/unit/api keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from tailor_contract.common import (
    DNS_LABEL_PATTERN,
    S3_URI_PATTERN,
    ApiModel,
    ColumnName,
    Fraction,
    Metric,
    Storage,
    Unique,
    duration_bounds,
)
from tailor_contract.quality import Quality as Quality  # re-exported: the trainer imports it here
from tailor_contract.tuning import Hyperparameters as Hyperparameters
from tailor_contract.tuning import Tuning

Task = Literal["text-classification", "image-classification", "custom"]
ZERO_SHOT_LABEL = "{label}"
MAX_ADDITIONAL_URIS = 16  # maxItems of spec.data.additionalUris in crds/trainingjobs.yaml
MAX_PRODUCTION_URIS = 16  # maxItems of spec.data.productionUris
TASK_TEXT_CLASSIFICATION = "text-classification"
TASK_IMAGE_CLASSIFICATION = "image-classification"
TASK_CUSTOM = "custom"
DEFAULT_PENDING_DEADLINE_SECONDS = 600
"""10 minutes: pulling a multi-gigabyte CUDA image onto a cold node or a cluster autoscaler
adding a node usually fits, while a missing image, Secret or node never does (Deployments'
progressDeadlineSeconds has the same default)."""
MAX_PENDING_DEADLINE_SECONDS = 86400  # a day; longer waits belong in a queue (0: no limit)
TUNING_NEEDS_BUILT_IN_TASK = (
    "tuning needs a built-in task (text-classification or image-classification), not custom"
)

BASE_MODEL_PATTERN = (
    r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|/.+"
    r"|hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+(@[A-Za-z0-9._/-]+)?)$"
)
DATA_URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|/.+)$"
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
ALIAS_PATTERN = r"^[a-z][a-z0-9_-]*$"

DataUri = Annotated[str, Field(min_length=1, max_length=2048, pattern=DATA_URI_PATTERN)]
Quantity = int | Annotated[str, Field(pattern=QUANTITY_PATTERN)]
ResourceList = Annotated[dict[str, Quantity], Field(max_length=16)]


class Baseline(ApiModel):
    """What the candidate must beat on the same locked test set."""

    generic: bool = True
    generic_method: Literal["LinearProbe", "ZeroShot"] = "LinearProbe"
    zero_shot_prompt: Annotated[str, Field(min_length=7, max_length=512)] | None = None
    production: bool = True

    @model_validator(mode="after")
    def _prompt_names_label(self) -> Baseline:
        if self.zero_shot_prompt is not None and ZERO_SHOT_LABEL not in self.zero_shot_prompt:
            raise ValueError(f"zeroShotPrompt must contain {ZERO_SHOT_LABEL}")
        return self

    def zero_shot_texts(self, labels: list[str]) -> list[str]:
        """The text embedded for each label (plain replacement: the prompt is user input)."""
        prompt = self.zero_shot_prompt or ZERO_SHOT_LABEL
        return [prompt.replace(ZERO_SHOT_LABEL, label) for label in labels]


class Model(ApiModel):
    """The model being trained."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)] | None = (
        None
    )
    base: (
        Annotated[str, Field(min_length=1, max_length=2048, pattern=BASE_MODEL_PATTERN)] | None
    ) = None
    baseline: Baseline = Field(default_factory=Baseline)


class Columns(ApiModel):
    """Which columns of the data hold what."""

    id: ColumnName = "id"
    text: ColumnName | None = None
    image: ColumnName | None = None
    label: ColumnName = "label"
    group: ColumnName | None = None
    annotators: Annotated[list[ColumnName], Field(min_length=2, max_length=32), Unique] | None = (
        None
    )
    timestamp: ColumnName = "timestamp"
    """When each row of data.productionUris was predicted; orders the recent holdout."""

    @model_validator(mode="after")
    def _distinct(self) -> Columns:
        if self.id == self.label:
            raise ValueError("columns.id and columns.label must differ")
        if self.annotators is not None and self.label in self.annotators:
            raise ValueError("columns.annotators must not contain the label column")
        return self


class Split(ApiModel):
    """The deterministic hash split with its locked test share."""

    validation: Annotated[float, Field(ge=0.01, le=0.5)] = 0.1
    test: Annotated[float, Field(ge=0.01, le=0.5)] = 0.1
    seed: Annotated[int, Field(ge=0, le=2147483647)] = 42
    test_set_version: Annotated[int, Field(ge=1, le=1000000)] = 1

    @model_validator(mode="after")
    def _room_for_training(self) -> Split:
        if self.validation + self.test > 0.5:
            raise ValueError(
                "split.validation + split.test must be at most 0.5, leaving at least half of the "
                "data for training"
            )
        return self


class Data(ApiModel):
    """The labelled data."""

    uri: DataUri
    additional_uris: (
        Annotated[list[DataUri], Field(max_length=MAX_ADDITIONAL_URIS), Unique] | None
    ) = None
    """Read after ``uri``, same format and columns; never part of the test set."""
    production_uris: (
        Annotated[list[DataUri], Field(max_length=MAX_PRODUCTION_URIS), Unique] | None
    ) = None
    """Labelled production examples with a ``columns.timestamp``: read last, never part of the
    test set; their most recent part is the recent holdout (``evaluation.recentHoldout``)."""
    format: Literal["auto", "csv", "jsonl", "parquet"] = "auto"
    columns: Columns = Field(default_factory=Columns)
    labels: (
        Annotated[
            list[Annotated[str, Field(min_length=1, max_length=256)]],
            Field(min_length=2, max_length=1000),
            Unique,
        ]
        | None
    ) = None
    split: Split = Field(default_factory=Split)
    quality: Quality = Field(default_factory=Quality)

    @model_validator(mode="after")
    def _additional_is_additional(self) -> Data:
        if self.additional_uris is not None and self.uri in self.additional_uris:
            raise ValueError("data.additionalUris must not repeat data.uri")
        production = self.production_uris or []
        if self.uri in production:
            raise ValueError("data.productionUris must not repeat data.uri")
        if any(uri in (self.additional_uris or []) for uri in production):
            raise ValueError("data.productionUris must not repeat data.additionalUris")
        return self

    def uris(self) -> list[str]:
        """``uri``, ``additionalUris``, then ``productionUris``: the order the trainer reads
        them in."""
        return [self.uri, *(self.additional_uris or []), *(self.production_uris or [])]


class EnvVar(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)]
    value: Annotated[str, Field(max_length=8192)] = ""


class Resources(ApiModel):
    """Compute resources of each worker pod, as in a container's resources."""

    requests: ResourceList | None = None
    limits: ResourceList | None = None


class Toleration(ApiModel):
    key: Annotated[str, Field(max_length=316)] | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: Annotated[str, Field(max_length=63)] | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _exists_has_no_value(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("a toleration with operator Exists must not have a value")
        return self


class Scheduling(ApiModel):
    """Where and when the worker pods run."""

    queue_name: (
        Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)] | None
    ) = None
    priority_class_name: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    node_selector: (
        Annotated[dict[str, Annotated[str, Field(max_length=63)]], Field(max_length=64)] | None
    ) = None
    tolerations: Annotated[list[Toleration], Field(max_length=64)] | None = None
    affinity: dict[str, Any] | None = None


class Checkpoint(ApiModel):
    """How often training state is saved so that a restarted run resumes exactly."""

    interval: Annotated[str, Field(max_length=32), duration_bounds("10s")] = "10m"
    every_steps: Annotated[int, Field(ge=1, le=100000000)] | None = None
    keep: Annotated[int, Field(ge=1, le=100)] = 3


class Output(ApiModel):
    uri: Annotated[str, Field(min_length=6, max_length=1024, pattern=S3_URI_PATTERN)]


class Tracking(ApiModel):
    """MLflow experiment tracking."""

    uri: Annotated[str, Field(max_length=1024, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")]
    experiment: Annotated[str, Field(min_length=1, max_length=256)] | None = None


class RecentHoldout(ApiModel):
    """The most recent labelled production examples, set aside to judge a retrain on."""

    fraction: Annotated[float, Field(gt=0, lt=1)] = 0.3
    min_examples: Annotated[int, Field(ge=1, le=1000000)] = 30


class Evaluation(ApiModel):
    """How the candidate is judged: against the baselines on the locked test set and, for a
    retrain, against the production model on the recent holdout."""

    metric: Metric = "accuracy"
    min_improvement: Fraction = 0.01
    significance_level: Annotated[float, Field(gt=0, le=0.5)] = 0.05
    bootstrap_samples: Annotated[int, Field(ge=100, le=100000)] = 1000
    recent_holdout: RecentHoldout = Field(default_factory=RecentHoldout)
    non_inferiority_margin: Annotated[float, Field(ge=0, le=0.5)] = 0.02


class Promotion(ApiModel):
    policy: Literal["Automatic", "Manual"] = "Automatic"
    alias: Annotated[str, Field(min_length=1, max_length=63, pattern=ALIAS_PATTERN)] = "production"


class RunPolicy(ApiModel):
    """Failure handling and lifetime; the only part of a spec meant to change while it runs."""

    backoff_limit: Annotated[int, Field(ge=0, le=100)] = 3
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = None
    ttl_seconds_after_finished: Annotated[int, Field(ge=0)] | None = None
    suspend: bool = False
    pending_deadline_seconds: Annotated[int, Field(ge=0, le=MAX_PENDING_DEADLINE_SECONDS)] = (
        DEFAULT_PENDING_DEADLINE_SECONDS
    )
    """How long the worker group may take to have every worker running, from its creation (or
    Kueue's admission, or the moment a worker stopped being ready); then the job fails with
    PendingDeadlineExceeded. 0: wait forever."""


ProcsPerWorker = Annotated[int, Field(ge=1, le=128)] | Literal["auto"]


class TrainingJobSpec(ApiModel):
    """``TrainingJob.spec``."""

    task: Task
    model: Model | None = None
    data: Data | None = None
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    tuning: Tuning | None = None
    """A hyper-parameter search before the run (tuning.py); absent: train once."""
    workers: Annotated[int, Field(ge=1, le=256)] = 1
    procs_per_worker: ProcsPerWorker = "auto"
    image: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    command: (
        Annotated[list[Annotated[str, Field(max_length=16384)]], Field(min_length=1, max_length=64)]
        | None
    ) = None
    args: Annotated[list[Annotated[str, Field(max_length=4096)]], Field(max_length=256)] | None = (
        None
    )
    env: Annotated[list[EnvVar], Field(max_length=128)] | None = None
    resources: Resources | None = None
    scheduling: Scheduling | None = None
    checkpoint: Checkpoint = Field(default_factory=Checkpoint)
    output: Output | None = None
    storage: Storage = Field(default_factory=Storage)
    tracking: Tracking | None = None
    evaluation: Evaluation = Field(default_factory=Evaluation)
    promotion: Promotion = Field(default_factory=Promotion)
    run_policy: RunPolicy = Field(default_factory=RunPolicy)

    @model_validator(mode="after")
    def _consistent(self) -> TrainingJobSpec:
        """The CRD's spec-level CEL rules (see x-kubernetes-validations on spec)."""
        custom = self.task == TASK_CUSTOM
        if not custom:
            for field in ("model", "data", "output"):
                if getattr(self, field) is None:
                    raise ValueError(f"{field} is required unless task is custom")
            if self.command is not None or self.args is not None:
                raise ValueError("command and args are only allowed when task is custom")
        elif self.command is None:
            raise ValueError("command is required when task is custom")
        if self.data is not None:
            columns = self.data.columns
            if self.task == TASK_TEXT_CLASSIFICATION and (
                columns.text is None or columns.image is not None
            ):
                raise ValueError(
                    "data.columns.text is required and data.columns.image is forbidden when task "
                    "is text-classification"
                )
            if self.task == TASK_IMAGE_CLASSIFICATION and (
                columns.image is None or columns.text is not None
            ):
                raise ValueError(
                    "data.columns.image is required and data.columns.text is forbidden when task "
                    "is image-classification"
                )
        if self.model is not None:
            baseline = self.model.baseline
            if baseline.generic_method == "ZeroShot" and self.task != TASK_TEXT_CLASSIFICATION:
                raise ValueError(
                    "model.baseline.genericMethod ZeroShot needs task text-classification"
                )
            if baseline.zero_shot_prompt is not None and baseline.generic_method != "ZeroShot":
                raise ValueError(
                    "model.baseline.zeroShotPrompt is only used when genericMethod is ZeroShot"
                )
        if self.env is not None and len({e.name for e in self.env}) != len(self.env):
            raise ValueError("env must not name a variable twice")
        if self.tuning is not None and custom:
            raise ValueError(TUNING_NEEDS_BUILT_IN_TASK)
        return self

    def with_parameters(self, params: Mapping[str, float]) -> TrainingJobSpec:
        """This spec with a trial's (or the best trial's) parameters in hyperparameters: the
        spec a trial, or the final run after a search, is handed."""
        merged = Tuning.merged(self.hyperparameters.to_api(), params)
        return self.model_copy(update={"hyperparameters": Hyperparameters.model_validate(merged)})

    def model_name(self, job_name: str) -> str:
        """The model's identity across runs: spec.model.name, else the TrainingJob's name."""
        if self.model is not None and self.model.name is not None:
            return self.model.name
        return job_name
