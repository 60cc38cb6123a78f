"""The contract between the operator and the trainer image, imported by both sides.

The operator starts the trainer in every worker pod as
`torchrun <PET_* from env> -m tailor_trainer` and hands it the TrainingJob through the
environment; the trainer reports back through its exit code, its termination message and a
Prometheus endpoint on rank 0. Nothing here imports torch or the Kubernetes client.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

# --- what the operator hands the trainer (environment variables) -----------------------------
ENV_TRAININGJOB: Final = "TAILOR_TRAININGJOB"
"""JSON of {apiVersion, kind, metadata: {name, namespace, uid}, spec: <defaulted spec>}."""
ENV_RUN_ID: Final = "TAILOR_RUN_ID"
"""The run's id: one per TrainingJob, stable across the group restarts of that job."""
ENV_ARTIFACT_URI: Final = "TAILOR_ARTIFACT_URI"
"""Where this run's artifacts go: `<spec.output.uri>/<model name>/runs/<run id>/`."""
ENV_MODEL_URI: Final = "TAILOR_MODEL_URI"
"""The model's prefix, `<spec.output.uri>/<model name>/`: the locked test manifest and the
production model live here and outlive every run."""
ENV_METRICS_PORT: Final = "TAILOR_METRICS_PORT"
ENV_RESTART_COUNT: Final = "TAILOR_GROUP_RESTARTS"
"""How many times the worker group has been restarted (0 on the first attempt)."""

ENV_TRIAL: Final = "TAILOR_TRIAL"
"""Only in a trial's pods (spec.tuning): JSON of {"number": n, "metric": "accuracy" |
"macro-f1" | "loss", "direction": "maximize" | "minimize", "searchRunId": <the job's run id>}.
The trainer then runs in trial mode: it reads the training and validation rows only (never a
test or recent-holdout row), selects its best epoch by the objective, reports the objective per
epoch (METRIC_VALIDATION_OBJECTIVE), and evaluates, publishes and promotes nothing. The spec it
is handed already carries the trial's hyper-parameters."""
ENV_SEARCH: Final = "TAILOR_SEARCH"
"""Only in the final run of a tuned job: JSON of the finished search, for the
model card and the MLflow parent run: {"objective": {"metric", "direction"}, "algorithm",
"earlyStopping": {...} | null, "searchSpace": {...}, "maxTrials", "trials": [{"number",
"parameters", "state", "value"?, "epochs"?}], "best": {"number", "parameters", "value"}}.
The handed spec already carries the best parameters."""


def run_id(trainingjob_uid: str) -> str:
    """The run's id (ENV_RUN_ID): one per TrainingJob object, stable across restarts of its
    worker group, new when the object is re-created."""
    return f"run-{trainingjob_uid[:8]}"


def trial_run_id(run_id_: str, number: int) -> str:
    """A trial's own run id (its checkpoints, its MLflow run), under the job's run id."""
    return f"{run_id_}-trial-{number}"


def trial_artifact_uri(artifact_uri: str, number: int) -> str:
    """Where trial ``number`` keeps its checkpoints and ARTIFACT_IDS_READ: inside the job's run
    prefix, `<run>/trials/<n>/`."""
    return f"{artifact_uri.rstrip('/')}/{ARTIFACT_TRIALS_DIR}/{number}/"


METRICS_PORT: Final = 9464
"""Rank 0 serves Prometheus metrics here; the operator scrapes it for status.progress."""
RENDEZVOUS_PORT: Final = 29400
"""torchrun's c10d rendezvous store, hosted by worker 0."""
MASTER_PORT: Final = 29500

LAUNCHER: Final = ("python", "-m", "tailor_trainer.launch")
"""The worker container's entry point: torchrun's launcher run in-process, taking torchrun's
arguments (its options come from PET_* variables), so that the container's exit code is the
trainer's (EXIT_PERMANENT survives) rather than torchrun's own 1."""

PROMOTE_COMMAND: Final = ("python", "-m", "tailor_trainer.promote")
"""Manual approval's one-off container: with a worker's environment it promotes a run whose
verdict is AwaitingApproval through the same code as the automatic path (exit EXIT_PERMANENT,
reason ApprovalRefused, when the run is not awaiting approval)."""

# --- what the trainer writes (artifact names) -------------------------------------------------
# In the run's prefix (ENV_ARTIFACT_URI):
ARTIFACT_MODEL_DIR: Final = "model"
ARTIFACT_CHECKPOINTS_DIR: Final = "checkpoints"
ARTIFACT_METRICS: Final = "metrics.json"
ARTIFACT_DATA_QUALITY: Final = "data-quality.json"
ARTIFACT_REFERENCE_PROFILE: Final = "reference-profile.json"
"""The training-time distributions (tailor_contract.profile) the DriftMonitor compares with."""
ARTIFACT_MODEL_CARD: Final = "model-card.md"
ARTIFACT_RECENT_HOLDOUT: Final = "recent-holdout.json"
"""The recent holdout of data.productionUris: the ids and content digests of the examples set
aside to judge a retrain on (never trained or validated on), and the counts."""
ARTIFACT_IDS_READ: Final = "ids-read.json"
"""Every run, trial or final, writes the example ids it read, by split:
{"train": [...], "validation": [...], "test": [...], "recentHoldout": [...]}; a trial's "test"
and "recentHoldout" are always empty. It is how the test-set-read-once rule is checked."""
ARTIFACT_TRIALS_DIR: Final = "trials"
ARTIFACT_MANIFEST: Final = "manifest.json"
"""sha256 and size of every file of the run, written last: a run without it is incomplete."""
# In the model's prefix (ENV_MODEL_URI), outliving every run:
PRODUCTION_POINTER: Final = "production.json"
"""Which run is in production; replaced in a single PUT on promotion."""


def test_set_manifest(model_uri: str, version: int) -> str:
    """The locked test set's id manifest, written once and read by every later run."""
    return f"{model_uri.rstrip('/')}/test-sets/v{version}/manifest.json"


# --- what the trainer reports back ------------------------------------------------------------
EXIT_SUCCESS: Final = 0
EXIT_PERMANENT: Final = 42
"""Bad data or bad configuration: retrying cannot help, the job fails at once."""
EXIT_RETRYABLE: Final = 75
"""A transient failure (storage unreachable, say): the worker group is restarted."""
# Any other non-zero exit (a crash, SIGKILL, OOM) is treated as retryable too.

TERMINATION_MESSAGE_LIMIT: Final = 4096

# Keys of TerminationSummary.metrics that the operator copies into the TrainingJob's status.
SUMMARY_VALIDATION: Final = "validation"  # the candidate's metric on the validation split
SUMMARY_TEST: Final = "test"  # the candidate's metric on the locked test set
SUMMARY_BASELINE: Final = "baseline"  # the generic baseline's, on the same test set
SUMMARY_PRODUCTION: Final = "production"  # the current production model's, if there is one
SUMMARY_IMPROVEMENT: Final = "improvement"  # over the model the verdict was decided against
SUMMARY_P_VALUE: Final = "pValue"  # of that comparison's paired significance test
SUMMARY_TEST_EXAMPLES: Final = "testExamples"

# TerminationSummary.promotion: the verdict per benchmark, which the operator copies into
# status.promotion. Each part compares the candidate with one model on one benchmark.
BENCHMARK_RECENT_HOLDOUT: Final = "recentHoldout"  # the recent holdout of data.productionUris
BENCHMARK_LOCKED_TEST_SET: Final = "lockedTestSet"
AGAINST_PRODUCTION: Final = "production"
AGAINST_GENERIC: Final = "generic"
VERDICT_PROMOTED: Final = "Promoted"
VERDICT_REJECTED: Final = "Rejected"
VERDICT_AWAITING_APPROVAL: Final = "AwaitingApproval"
VERDICT_NOT_APPLICABLE: Final = "NotApplicable"

# TerminationSummary.data_quality: the gate's outcome, which the operator turns into the
# DataQualityPassed condition (reason DataQualityPassed, DataQualityWarnings or
# DataQualityFailed, from tailor_contract.constants).
QUALITY_PASSED: Final = "Passed"
QUALITY_WARNINGS: Final = "Warnings"
QUALITY_FAILED: Final = "Failed"

# Prometheus metric names served by rank 0 (gauges unless noted).
METRIC_STEP: Final = "tailor_trainer_step"
METRIC_TOTAL_STEPS: Final = "tailor_trainer_total_steps"
METRIC_EPOCH: Final = "tailor_trainer_epoch"
METRIC_LOSS: Final = "tailor_trainer_loss"
METRIC_SAMPLES_PER_SECOND: Final = "tailor_trainer_samples_per_second"
METRIC_ETA_SECONDS: Final = "tailor_trainer_eta_seconds"
METRIC_VALIDATION_OBJECTIVE: Final = "tailor_trainer_validation_objective"
"""Trial mode: the objective on the validation split after each epoch, one sample per epoch
with label LABEL_EPOCH ("1", "2", ...): the operator's pruner reads the whole curve at once."""
LABEL_EPOCH: Final = "epoch"


@dataclass
class TerminationSummary:
    """What the trainer writes to its termination message (JSON, one line, <= 4 KiB)."""

    outcome: str  # "Succeeded" or "Failed"
    reason: str = ""  # a CamelCase reason, e.g. DataQualityFailed, Promoted, NotSignificant
    message: str = ""
    permanent: bool = False
    artifact_uri: str = ""
    mlflow_run_id: str = ""
    promoted: bool | None = None
    data_quality: str = ""  # QUALITY_PASSED, QUALITY_WARNINGS or QUALITY_FAILED; "" if not run
    data_quality_message: str = ""  # the violated checks, for the condition's message
    metrics: dict[str, float] = field(default_factory=dict)
    promotion: dict[str, Any] = field(default_factory=dict)
    """The verdict per benchmark: {verdict, reason, message, modelVersion?, approval?, parts:
    [{benchmark, against, metric, candidate, other, improvement, pValue, examples, passed
    (null: NotApplicable), why}]}; see BENCHMARK_* and VERDICT_*."""
    trial: dict[str, Any] = field(default_factory=dict)
    """Trial mode only: {number, value (the best epoch's objective, rounded to 6 decimals;
    null if it was not finite), bestEpoch (1-based; 0 if none was selected), curve: [[epoch,
    value], ...]} (at most 100 points, keeping the first, best and last; dropped with the
    metrics when the message is too long). A trial's reason is TrialCompleted and its metrics
    {SUMMARY_VALIDATION: value}."""

    def to_message(self) -> str:
        """One JSON line within TERMINATION_MESSAGE_LIMIT: when the whole summary is too long,
        the least important pieces go first (long texts are cut, then the parts' explanations,
        the numbers, the parts themselves), so the outcome and the verdict always arrive."""
        text = ""
        for shorten in range(len(_SHORTER) + 1):
            short = self if shorten == 0 else _SHORTER[shorten - 1](self)
            text = json.dumps({k: v for k, v in asdict(short).items() if v not in ("", None, {})},
                              separators=(",", ":"))
            if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
                break
        return text

    @classmethod
    def parse(cls, text: str | None) -> TerminationSummary | None:
        """The summary in a termination message, or None when it holds something else (a log
        tail written by FallbackToLogsOnError, say)."""
        if not text:
            return None
        try:
            data: Any = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or "outcome" not in data:
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _cut_texts(s: TerminationSummary) -> TerminationSummary:
    promotion = dict(s.promotion)
    if "message" in promotion:
        promotion["message"] = str(promotion["message"])[:512]
    if isinstance(promotion.get("parts"), list):
        promotion["parts"] = [{**p, "why": str(p.get("why", ""))[:160]} if isinstance(p, dict)
                              else p for p in promotion["parts"]]
    return replace(s, message=s.message[:1024], data_quality_message=s.data_quality_message[:512],
                   artifact_uri=s.artifact_uri[:1024], promotion=promotion)


def _without_why(s: TerminationSummary) -> TerminationSummary:
    s = _cut_texts(s)
    parts = s.promotion.get("parts")
    if not isinstance(parts, list):
        return s
    return replace(s, promotion={**s.promotion, "parts": [
        {k: v for k, v in p.items() if k != "why"} if isinstance(p, dict) else p
        for p in parts]})


def _without_metrics(s: TerminationSummary) -> TerminationSummary:
    trial = {k: v for k, v in s.trial.items() if k != "curve"}
    return replace(_without_why(s), metrics={}, trial=trial)


def _without_parts(s: TerminationSummary) -> TerminationSummary:
    s = _without_metrics(s)
    return replace(s, promotion={k: v for k, v in s.promotion.items() if k != "parts"})


def _bare(s: TerminationSummary) -> TerminationSummary:
    s = _without_parts(s)
    return replace(s, message=s.message[:512], data_quality_message=s.data_quality_message[:256],
                   artifact_uri=s.artifact_uri[:512], mlflow_run_id=s.mlflow_run_id[:64],
                   reason=s.reason[:128], promotion={
                       k: str(v)[:64] for k, v in s.promotion.items()
                       if k in ("verdict", "reason")})


_SHORTER = (_cut_texts, _without_why, _without_metrics, _without_parts, _bare)
"""Ever shorter forms of a summary, tried in order by `TerminationSummary.to_message`."""
