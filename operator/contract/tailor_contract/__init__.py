"""What Tailor's operator and trainer agree on, imported by both and doing no I/O.

`trainingjob` and `driftmonitor` (the typed specs, which parse and default as the CRDs do),
`constants` (group, kinds, labels, condition types and reasons), `names` (deterministic child
names), `trainer_api` (the operator-trainer contract: environment, exit codes, the termination
summary, artifact names, `run_id()`), `clock` (RFC 3339 time), `uris` (object-store URIs),
`metrics` (the one definition of accuracy and macro-F1) and `profile` (the reference-profile
format). The spec models are re-exported here.
"""

from tailor_contract.common import CredentialsSecret, Storage, name_errors, parse_duration
from tailor_contract.driftmonitor import DriftMonitorSpec
from tailor_contract.trainingjob import TrainingJobSpec

__all__ = [
    "CredentialsSecret",
    "DriftMonitorSpec",
    "Storage",
    "TrainingJobSpec",
    "name_errors",
    "parse_duration",
]
