"""Names that the CRDs, the operator and the trainer must agree on.

Everything here is part of the API contract: changing a value is a breaking change for objects
and children that already exist in clusters.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "tailor.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CATEGORY: Final = "tailor"

TRAININGJOB_KIND: Final = "TrainingJob"
TRAININGJOB_PLURAL: Final = "trainingjobs"
TRAININGJOB_SINGULAR: Final = "trainingjob"
TRAININGJOB_SHORT_NAME: Final = "tj"

DRIFTMONITOR_KIND: Final = "DriftMonitor"
DRIFTMONITOR_PLURAL: Final = "driftmonitors"
DRIFTMONITOR_SINGULAR: Final = "driftmonitor"
DRIFTMONITOR_SHORT_NAME: Final = "dm"

# --- Labels and annotations -------------------------------------------------------------------

LABEL_TRAININGJOB: Final = f"{GROUP}/trainingjob"
"""On every child of a TrainingJob (Service, Job, pods): the TrainingJob's name."""
LABEL_COMPONENT: Final = f"{GROUP}/component"
"""What a child is; one of the COMPONENT_* values."""
LABEL_DRIFTMONITOR: Final = f"{GROUP}/driftmonitor"
"""On a TrainingJob that a DriftMonitor created: the monitor's name."""
LABEL_MODEL: Final = f"{GROUP}/model"
"""On a TrainingJob a DriftMonitor created: the model's name (spec.model.name)."""

COMPONENT_WORKERS: Final = "workers"
COMPONENT_SERVICE: Final = "service"
COMPONENT_PROMOTE: Final = "promote"
"""The one-off Job that promotes a run a person approved (ANNOTATION_APPROVE)."""
COMPONENT_TRIAL: Final = "trial"
"""A trial of spec.tuning: its own worker group (Indexed Job and headless Service)."""
LABEL_TRIAL: Final = f"{GROUP}/trial"
"""On a trial's children: the trial's number (0, 1, ...)."""

ANNOTATION_TRIGGER: Final = f"{GROUP}/trigger"
"""On a retraining TrainingJob: JSON of the trigger (monitor, reason, message, window, time,
and ``productionData``: the URI and row count of the labelled production examples folded in).

The DriftMonitor sets it at creation, in the same request that creates the job, so the lineage
can never be lost; the TrainingJob controller copies it into status.triggeredBy.
"""
ANNOTATION_APPROVE: Final = f"{GROUP}/approve"
"""Set by a person (or GitOps) on a TrainingJob awaiting approval: the run id to promote. The
operator refuses a value naming another run, records the decision in status.promotion and as
an Event, and promotes exactly as the automatic path does."""
ANNOTATION_REJECT: Final = f"{GROUP}/reject"
"""Like ANNOTATION_APPROVE, to reject the awaiting run: nothing is promoted."""
FINALIZER: Final = f"{GROUP}/finalizer"
KOPF_ANNOTATION_PREFIX: Final = GROUP

# --- Child names and their limits -------------------------------------------------------------

DNS_LABEL_MAX: Final = 63
MAX_WORKERS: Final = 256
"""Worker indexes 0..255 have at most three digits."""
WORKER_JOB_SUFFIX: Final = "-worker"
PROMOTE_JOB_SUFFIX: Final = "-promote"
TRIAL_INFIX: Final = "-t"
"""Trial n's worker group (Job and Service) is <name>-t<n>; its pods' host names
<name>-t<n>-<index> fit a DNS label for every trial number below MAX_TRIALS."""
MAX_TRIALS: Final = 100
RETRAIN_INFIX: Final = "-retrain-"
RETRAIN_HASH_LENGTH: Final = 8

MAX_TRAININGJOB_NAME: Final = DNS_LABEL_MAX - len(WORKER_JOB_SUFFIX) - len("-") - 3
"""52: the worker pods' host names, <name>-worker-<index>, must be DNS labels (63 characters).

The headless Service <name> and the Job <name>-worker are shorter, and the label values
(tailor.dev/trainingjob, batch.kubernetes.io/job-name) are the same strings.
"""
MAX_DRIFTMONITOR_NAME: Final = MAX_TRAININGJOB_NAME - len(RETRAIN_INFIX) - RETRAIN_HASH_LENGTH
"""35: retraining jobs are TrainingJobs named <monitor>-retrain-<8 hex chars>."""

# --- Condition types --------------------------------------------------------------------------
# TrainingJob follows batch/v1 Job (Succeeded/Failed/Suspended are terminal or pausing states that
# Argo CD's Job-like health understands); both kinds carry kstatus' Reconciling and Stalled.

CONDITION_READY: Final = "Ready"
CONDITION_RECONCILING: Final = "Reconciling"
CONDITION_STALLED: Final = "Stalled"

CONDITION_RUNNING: Final = "Running"
CONDITION_SUCCEEDED: Final = "Succeeded"
CONDITION_FAILED: Final = "Failed"
CONDITION_SUSPENDED: Final = "Suspended"
CONDITION_DATA_QUALITY_PASSED: Final = "DataQualityPassed"
CONDITION_PROMOTED: Final = "Promoted"

CONDITION_DRIFT_DETECTED: Final = "DriftDetected"
CONDITION_ACCURACY_BELOW_THRESHOLD: Final = "AccuracyBelowThreshold"
CONDITION_RETRAINING: Final = "Retraining"

TRAININGJOB_CONDITIONS: Final = (
    CONDITION_READY,
    CONDITION_RECONCILING,
    CONDITION_STALLED,
    CONDITION_RUNNING,
    CONDITION_SUCCEEDED,
    CONDITION_FAILED,
    CONDITION_SUSPENDED,
    CONDITION_DATA_QUALITY_PASSED,
    CONDITION_PROMOTED,
)
DRIFTMONITOR_CONDITIONS: Final = (
    CONDITION_READY,
    CONDITION_RECONCILING,
    CONDITION_STALLED,
    CONDITION_DRIFT_DETECTED,
    CONDITION_ACCURACY_BELOW_THRESHOLD,
    CONDITION_RETRAINING,
)

STATUS_TRUE: Final = "True"
STATUS_FALSE: Final = "False"
STATUS_UNKNOWN: Final = "Unknown"

# --- Condition reasons (CamelCase, matched by programs) ---------------------------------------

# Shared
REASON_RECONCILING: Final = "Reconciling"
REASON_RECONCILED: Final = "Reconciled"
REASON_INVALID_SPEC: Final = "InvalidSpec"
REASON_STORAGE_ERROR: Final = "StorageError"
REASON_SECRET_NOT_FOUND: Final = "SecretNotFound"  # noqa: S105

# TrainingJob lifecycle
REASON_PENDING: Final = "Pending"
"""DataQualityPassed and Promoted are Unknown with this reason until the trainer reports."""
REASON_CREATED: Final = "Created"
REASON_WORKERS_STARTING: Final = "WorkersStarting"
REASON_WORKERS_RUNNING: Final = "WorkersRunning"
REASON_QUEUED: Final = "Queued"
"""Suspended (and still Reconciling) while Kueue has not admitted the worker Job, which waits
suspended as a batch/v1 Job under Kueue does; Argo CD shows it Suspended, as such a Job."""
REASON_RESTARTING: Final = "Restarting"
REASON_COMPLETED: Final = "Completed"
REASON_SUSPENDED: Final = "Suspended"
REASON_RESUMED: Final = "Resumed"
# TrainingJob failures
REASON_BACKOFF_LIMIT_EXCEEDED: Final = "BackoffLimitExceeded"
REASON_DEADLINE_EXCEEDED: Final = "DeadlineExceeded"
REASON_PENDING_DEADLINE_EXCEEDED: Final = "PendingDeadlineExceeded"
"""The workers did not all start within spec.runPolicy.pendingDeadlineSeconds."""
REASON_PERMANENT_FAILURE: Final = "PermanentFailure"
REASON_OOM_KILLED: Final = "OOMKilled"
REASON_EVICTED: Final = "Evicted"
REASON_NODE_LOST: Final = "NodeLost"
"""A worker's node disappeared (status.failure.reason, and a restart's reason)."""
REASON_WORKER_FAILED: Final = "WorkerFailed"
# A worker that cannot start: the kubelet's own waiting reasons (pods' containerStatuses[].state
# .waiting.reason), which no retry by the kubelet fixes without someone's help, and the
# scheduler's Unschedulable (PodScheduled False). The TrainingJob reports them as its Stalled
# condition's reason while it waits, and in status.failure if its pending deadline passes.
REASON_ERR_IMAGE_PULL: Final = "ErrImagePull"
REASON_IMAGE_PULL_BACK_OFF: Final = "ImagePullBackOff"
REASON_INVALID_IMAGE_NAME: Final = "InvalidImageName"
REASON_ERR_IMAGE_NEVER_PULL: Final = "ErrImageNeverPull"
REASON_IMAGE_INSPECT_ERROR: Final = "ImageInspectError"
REASON_CREATE_CONTAINER_CONFIG_ERROR: Final = "CreateContainerConfigError"
"""A Secret or ConfigMap (or a key in it) that a container's env names does not exist."""
REASON_CREATE_CONTAINER_ERROR: Final = "CreateContainerError"
REASON_UNSCHEDULABLE: Final = "Unschedulable"
STUCK_WAITING_REASONS: Final = (
    REASON_ERR_IMAGE_PULL,
    REASON_IMAGE_PULL_BACK_OFF,
    REASON_INVALID_IMAGE_NAME,
    REASON_ERR_IMAGE_NEVER_PULL,
    REASON_IMAGE_INSPECT_ERROR,
    REASON_CREATE_CONTAINER_CONFIG_ERROR,
    REASON_CREATE_CONTAINER_ERROR,
)
# Data quality
REASON_DATA_QUALITY_PASSED: Final = "DataQualityPassed"
REASON_DATA_QUALITY_WARNINGS: Final = "DataQualityWarnings"
REASON_DATA_QUALITY_FAILED: Final = "DataQualityFailed"
# Promotion
REASON_PROMOTED: Final = "Promoted"
REASON_NOT_BETTER: Final = "NotBetter"
REASON_NOT_SIGNIFICANT: Final = "NotSignificant"
REASON_AWAITING_APPROVAL: Final = "AwaitingApproval"
REASON_NOT_APPLICABLE: Final = "NotApplicable"
"""No verdict (a custom task, or a failed run); for DataQualityPassed: no gate was reported;
for one part of a verdict: that benchmark could not judge (too few recent examples, say)."""
REASON_REGRESSED: Final = "Regressed"
"""A retrain not shown to be within evaluation.nonInferiorityMargin of the production model on
the locked test set (a one-sided paired test at evaluation.significanceLevel): the regression
guard a retrain must pass besides beating production on the recent holdout."""
REASON_REJECTED: Final = "Rejected"
"""A run awaiting approval that a person rejected (ANNOTATION_REJECT)."""
# Events of manual approval
REASON_APPROVED: Final = "Approved"
REASON_PROMOTING: Final = "Promoting"
REASON_PROMOTION_FAILED: Final = "PromotionFailed"
REASON_APPROVAL_REFUSED: Final = "ApprovalRefused"
"""An approve/reject annotation naming a run that is not awaiting approval: nothing changes."""

# DriftMonitor
REASON_CHECKED: Final = "Checked"
REASON_INSUFFICIENT_SAMPLES: Final = "InsufficientSamples"
REASON_PROFILE_NOT_FOUND: Final = "ProfileNotFound"
REASON_TRAININGJOB_NOT_FOUND: Final = "TrainingJobNotFound"
REASON_NO_DRIFT: Final = "NoDrift"
REASON_FEATURE_DRIFT: Final = "FeatureDrift"
REASON_PREDICTION_DRIFT: Final = "PredictionDrift"
REASON_ACCURACY_OK: Final = "AccuracyOK"
REASON_ACCURACY_BELOW_THRESHOLD: Final = "AccuracyBelowThreshold"
REASON_RETRAIN_CREATED: Final = "RetrainCreated"
REASON_RETRAIN_RUNNING: Final = "RetrainRunning"
REASON_RETRAIN_SUCCEEDED: Final = "RetrainSucceeded"
REASON_RETRAIN_FAILED: Final = "RetrainFailed"
REASON_COOLDOWN: Final = "CooldownActive"
REASON_RETRAIN_DISABLED: Final = "RetrainDisabled"
REASON_PRODUCTION_DATA_FAILED: Final = "ProductionDataFailed"
"""Event: the window's labelled production data could not be written; the retrain waits."""

# Tuning (spec.tuning): the search's Events, the job's failure reasons, a trial's states
REASON_SEARCHING: Final = "Searching"
REASON_TRIAL_STARTED: Final = "TrialStarted"
REASON_TRIAL_COMPLETED: Final = "TrialCompleted"
REASON_TRIAL_PRUNED: Final = "TrialPruned"
REASON_TRIAL_FAILED: Final = "TrialFailed"
REASON_TRIAL_RESTARTED: Final = "TrialRestarted"
REASON_SEARCH_COMPLETED: Final = "SearchCompleted"
REASON_TOO_MANY_FAILED_TRIALS: Final = "TooManyFailedTrials"
REASON_NO_SUCCESSFUL_TRIAL: Final = "NoSuccessfulTrial"
REASON_NON_FINITE_LOSS: Final = "NonFiniteLoss"
"""The training loss became NaN or infinite (a permanent failure: the hyper-parameters cannot
train); a trial that hits it is recorded as failed and the search goes on."""
TRIAL_PENDING: Final = "Pending"
TRIAL_RUNNING: Final = "Running"
TRIAL_COMPLETED: Final = "Completed"
TRIAL_PRUNED: Final = "Pruned"
TRIAL_FAILED: Final = "Failed"
TRIAL_STATES: Final = (TRIAL_PENDING, TRIAL_RUNNING, TRIAL_COMPLETED, TRIAL_PRUNED, TRIAL_FAILED)
SEARCH_SEARCHING: Final = "Searching"
SEARCH_COMPLETED: Final = "Completed"
SEARCH_FAILED: Final = "Failed"

# --- Retrain triggers (spec.retrain.triggers, status.triggeredBy.reason) -----------------------

TRIGGER_ACCURACY_BELOW_THRESHOLD: Final = "AccuracyBelowThreshold"
TRIGGER_DRIFT_DETECTED: Final = "DriftDetected"
TRIGGER_ALERT: Final = "Alert"

# --- Phases (for humans; programs read conditions) ----------------------------------------------

TRAININGJOB_PHASES: Final = (
    "Pending",
    "Validating",
    "Tuning",
    "Running",
    "Restarting",
    "Evaluating",
    "Succeeded",
    "Failed",
    "Suspended",
)
DRIFTMONITOR_PHASES: Final = ("Pending", "Healthy", "Drifting", "Degraded", "Retraining", "Error")

PROMOTION_VERDICTS: Final = ("Promoted", "Rejected", "AwaitingApproval", "NotApplicable")

# Fields a TrainingJob's spec cannot change after creation (CEL `self == oldSelf` rules).
TRAININGJOB_IMMUTABLE_FIELDS: Final = (
    "task",
    "model",
    "data",
    "hyperparameters",
    "evaluation",
    "output",
    "workers",
    "procsPerWorker",
    "image",
    "command",
    "args",
    "env",
    "resources",
    "tuning",
)
DRIFTMONITOR_IMMUTABLE_FIELDS: Final = ("model",)
