"""Drift statistics and profile comparison for DriftMonitor (numpy, scipy and pyarrow only).

- ``build_reference_profile`` / ``ReferenceProfile``: the training-time profile
  (``reference-profile.json``) the trainer writes and the monitor reads.
- ``run_check``: one check of a window of prediction logs and late labels against a profile;
  ``CheckSettings.from_spec`` reads a DriftMonitor's spec; ``CheckResult.to_status`` gives the
  status fields.
- ``WindowAccumulator`` + ``evaluate``: the same check in mergeable pieces.
- ``read_log_batches`` / ``s3_filesystem``: stream Parquet or JSONL logs from S3 or disk;
  ``ParquetColumns``: a reference table's columns, read one at a time for the profile.
"""

from tailor.drift.accuracy import AccuracyResult, LabelIndex, wilson_interval
from tailor.drift.check import (
    CheckResult,
    CheckSettings,
    FeatureScore,
    PredictionDrift,
    evaluate,
    run_check,
)
from tailor.drift.logs import ParquetColumns, read_log_batches, s3_filesystem
from tailor.drift.profile import (
    FORMAT_VERSION,
    ProfileError,
    ReferenceProfile,
    build_reference_profile,
)
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
    "s3_filesystem",
    "wilson_interval",
]
