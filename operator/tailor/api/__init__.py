"""Tailor's API: constants and typed specs of TrainingJob and DriftMonitor (no I/O, no Kopf)."""

from tailor.api.common import CredentialsSecret, Storage, name_errors, parse_duration
from tailor.api.driftmonitor import DriftMonitorSpec
from tailor.api.trainingjob import TrainingJobSpec

__all__ = [
    "CredentialsSecret",
    "DriftMonitorSpec",
    "Storage",
    "TrainingJobSpec",
    "name_errors",
    "parse_duration",
]
