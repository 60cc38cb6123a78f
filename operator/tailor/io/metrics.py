"""The operator's Prometheus metrics (prefix `tailor_`), served on the metrics port."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRAININGJOBS = Gauge("tailor_trainingjobs", "TrainingJobs by phase", ["namespace", "phase"])
JOB_DURATION = Histogram(
    "tailor_trainingjob_duration_seconds",
    "Time from start to completion of finished TrainingJobs", ["outcome"],
    buckets=(30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400))
RESTARTS = Counter("tailor_trainingjob_restarts_total", "Whole worker-group restarts",
                   ["namespace", "reason"])
TRIALS = Counter("tailor_tuning_trials_total", "Trials of spec.tuning searches that ended, by "
                 "state (Completed, Pruned, Failed)", ["namespace", "state"])
TRIALS_RUNNING = Gauge("tailor_tuning_trials_running", "Trials whose worker groups run now",
                       ["namespace", "trainingjob"])
BEST_OBJECTIVE = Gauge("tailor_tuning_best_objective", "The best completed trial's validation "
                       "objective so far", ["namespace", "trainingjob", "metric"])
RECONCILE_SECONDS = Histogram("tailor_reconcile_duration_seconds", "Reconcile latency",
                              ["kind"], buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
RECONCILE_ERRORS = Counter("tailor_reconcile_errors_total", "Reconciles that raised", ["kind"])
API_REQUESTS = Counter("tailor_api_requests_total",
                       "Kubernetes API requests the operator made (watches excluded)",
                       ["verb", "resource", "code"])
API_RETRIES = Counter("tailor_api_retries_total",
                      "Kubernetes API requests retried after a transient failure, by reason "
                      "(connection, timeout, or the status: 429, 500, 502, 503, 504)", ["reason"])
RESYNCS = Counter("tailor_resyncs_total", "Objects re-assessed by the periodic resync",
                  ["kind"])

# DriftMonitor
MONITOR = ["namespace", "monitor"]
MODEL_METRIC = Gauge("tailor_model_metric", "The production model's metric over the window",
                     [*MONITOR, "metric"])
MODEL_METRIC_THRESHOLD = Gauge("tailor_model_metric_threshold",
                               "The threshold below which the model metric alerts",
                               [*MONITOR, "metric"])
MODEL_METRIC_LOWER = Gauge("tailor_model_metric_lower_bound",
                           "Lower end of the model metric's confidence interval",
                           [*MONITOR, "metric"])
FEATURE_DRIFT = Gauge("tailor_feature_drift_score", "Drift score of one feature",
                      [*MONITOR, "feature", "method"])
PREDICTION_DRIFT = Gauge("tailor_prediction_drift_score", "Drift score of the predictions",
                         [*MONITOR, "method"])
DRIFT_DETECTED = Gauge("tailor_drift_detected", "1 when the last check found drift", MONITOR)
LABEL_COVERAGE = Gauge("tailor_label_coverage",
                       "Share of the window's predictions whose label has arrived", MONITOR)
WINDOW_PREDICTIONS = Gauge("tailor_window_predictions", "Predictions in the checked window",
                           MONITOR)
RETRAINS = Counter("tailor_retrains_total", "Retraining TrainingJobs created",
                   [*MONITOR, "reason"])
CHECK_SECONDS = Histogram("tailor_drift_check_duration_seconds", "Duration of drift checks",
                          buckets=(.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300))
CHECK_ERRORS = Counter("tailor_drift_check_errors_total", "Drift checks that failed",
                       [*MONITOR, "reason"])
ALERTS = Counter("tailor_alerts_received_total", "Alerts received on the webhook",
                 ["outcome"])
