"""Drift statistics and profile comparison for DriftMonitor (numpy, scipy and pyarrow only).

Numbers only: nothing here reads a spec, writes a status or talks to Kubernetes or boto3.

- ``build_reference_profile`` / ``ReferenceProfile`` (``tailor_contract.profile``): the
  training-time profile (``reference-profile.json``) the trainer writes and the monitor reads.
- ``run_check``: one check of a window of prediction logs and late labels against a profile,
  with ``CheckSettings``, giving a ``CheckResult`` (``result``; the statistics in ``methods``).
- ``WindowAccumulator`` + ``evaluate``: the same check in mergeable pieces (``window``, whose
  numeric counts ``binning`` computes).
- ``read_log_batches``: stream Parquet or JSONL logs from S3 (given the store's pyarrow
  filesystem) or disk; ``ParquetColumns``: a reference table's columns, read one at a time.
- ``production``: a window's labelled examples written as training data for a retrain.
"""

from tailor_contract.profile import (
    FORMAT_VERSION,
    ProfileError,
    ReferenceProfile,
    build_reference_profile,
)

from tailor.drift.accuracy import AccuracyResult, LabelIndex, wilson_interval
from tailor.drift.check import evaluate, run_check
from tailor.drift.logs import ParquetColumns, read_log_batches
from tailor.drift.result import CheckResult, CheckSettings, FeatureScore, PredictionDrift
from tailor.drift.window import WindowAccumulator

__all__ = [
    "FORMAT_VERSION",
    "AccuracyResult",
    "CheckResult",
    "CheckSettings",
    "FeatureScore",
    "LabelIndex",
    "ParquetColumns",
    "PredictionDrift",
    "ProfileError",
    "ReferenceProfile",
    "WindowAccumulator",
    "build_reference_profile",
    "evaluate",
    "read_log_batches",
    "run_check",
    "wilson_interval",
]
