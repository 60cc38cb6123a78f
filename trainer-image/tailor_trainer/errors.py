"""The trainer's failure kinds, mapped onto the contract's exit codes.

A failure is either the input's fault (bad data, bad configuration: retrying cannot help, so the
job fails at once with EXIT_PERMANENT) or the world's (storage unreachable, a peer lost: the
worker group is restarted and resumes from its last checkpoint, EXIT_RETRYABLE). Anything that
is neither is a bug or a crash, and the contract treats its exit code as retryable too.
"""

from __future__ import annotations

import logging

from tailor_contract import constants
from tailor_contract.trainer_api import EXIT_PERMANENT, EXIT_RETRYABLE

# Reasons the operator also uses come from the contract; the rest are the trainer's own and
# reach the operator only inside a TerminationSummary.
REASON_INVALID_SPEC = constants.REASON_INVALID_SPEC
REASON_DATA_QUALITY_FAILED = constants.REASON_DATA_QUALITY_FAILED
REASON_STORAGE_ERROR = constants.REASON_STORAGE_ERROR
REASON_DATA_UNREADABLE = "DataUnreadable"
REASON_TEST_SET_CHANGED = "TestSetChanged"
REASON_STORAGE_DENIED = "StorageAccessDenied"
REASON_BASE_MODEL_UNUSABLE = "BaseModelUnusable"
REASON_PREEMPTED = "Preempted"
REASON_PEER_FAILED = "PeerFailed"
REASON_CRASHED = "Crashed"


log = logging.getLogger(__name__)


class TrainerError(Exception):
    """A failure with a CamelCase reason and a message written for the person who fixes it."""

    exit_code = 1
    permanent = False

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[type[TrainerError], tuple[str, str]]:
        # Errors travel between ranks as pickled objects (all_gather_object).
        return (type(self), (self.reason, self.message))


class PermanentError(TrainerError):
    """Bad data or bad configuration: the same input would fail the same way again."""

    exit_code = EXIT_PERMANENT
    permanent = True


class RetryableError(TrainerError):
    """A transient failure: a restart of the worker group may well succeed."""

    exit_code = EXIT_RETRYABLE


class DataQualityFailed(PermanentError):
    """The data cannot train a model that is worth judging: a violated Fail check of the gate,
    or a split that leaves a part empty. `checks` names what was violated, short, for the
    DataQualityPassed condition the operator sets from the termination message."""

    def __init__(self, message: str, checks: str = "") -> None:
        super().__init__(REASON_DATA_QUALITY_FAILED, message)
        self.checks = checks

    def __reduce__(self) -> tuple[type[DataQualityFailed], tuple[str, str]]:
        return (type(self), (self.message, self.checks))


def exit_code(exc: BaseException, what: str) -> int:
    """Log a failure as both entry points do (call it in the `except` block) and return the
    exit code the operator reads: the error's own for a TrainerError, 1 for a crash."""
    if isinstance(exc, TrainerError):
        log.error("%s: %s", exc.reason, exc.message)
        return exc.exit_code
    log.exception("%s crashed", what)
    return 1
