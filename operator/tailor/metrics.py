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
RECONCILE_SECONDS = Histogram("tailor_reconcile_duration_seconds", "Reconcile latency",
                              ["kind"], buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
RECONCILE_ERRORS = Counter("tailor_reconcile_errors_total", "Reconciles that raised", ["kind"])
API_REQUESTS = Counter("tailor_api_requests_total",
                       "Kubernetes API requests the operator made (watches excluded)",
                       ["verb", "resource", "code"])
