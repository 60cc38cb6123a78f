"""What a DriftMonitor compares production with, and since when: the model in production.

A retrain that is promoted replaces the model production serves: the trainer copies the new
model beside the old one and flips one pointer, ``<output>/<model>/production.json``
(``tailor_contract.trainer_api.PRODUCTION_POINTER``: ``runId``, ``artifactUri``,
``promotedAt``, ...). A monitor that kept the first run's profile would compare the new model's
inputs and predictions with a distribution it was not trained on, and a window that kept the
old model's predictions would hold AccuracyBelowThreshold set for as long as the window is
long after a better model serves, and could even retrain the retrain. So each check reads the
pointer, compares with the promoted run's reference profile, and counts only the predictions
made since that promotion.

Without a pointer (nothing promoted yet, or a job that writes none) the monitored
TrainingJob's own run is the reference, as it always was; an explicit ``model.profileUri`` is
used as given, since whoever names a profile has chosen what to compare with.

Pure: the controller reads the pointer and the TrainingJob and hands them in.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tailor_contract import clock, uris
from tailor_contract import constants as c
from tailor_contract.driftmonitor import DriftMonitorSpec
from tailor_contract.trainer_api import ARTIFACT_REFERENCE_PROFILE, PRODUCTION_POINTER

from tailor.assess.driftmonitor import Failure

Obj = dict[str, Any]
SOURCE_PROFILE_URI = "ProfileUri"
"""The spec's model.profileUri."""
SOURCE_PRODUCTION_POINTER = "ProductionPointer"
"""The run that ``production.json`` names: the model in production."""
SOURCE_TRAININGJOB = "TrainingJob"
"""The monitored TrainingJob's own run (no model promoted yet)."""


@dataclass(frozen=True)
class Reference:
    """The profile a check compares with, the run that wrote it, and since when that run's model
    serves (None: not known, the whole window counts)."""

    profile_uri: str
    source: str
    run_id: str | None = None
    promoted_at: datetime.datetime | None = None

    def window_start(self, now: datetime.datetime, window: datetime.timedelta
                     ) -> datetime.datetime:
        """The check window's start: `window` before `now`, but not before the promotion, so
        the old model's predictions do not count against the new one. A promotion stamped
        after `now` (clocks apart) gives an empty window, not a reversed one."""
        start = now - window
        if self.promoted_at is None:
            return start
        return max(start, min(self.promoted_at, now))

    def status(self) -> Obj:
        """``status.reference``: which run's profile the last check compared with. A field
        that does not apply is None, which the status merge-patch deletes (an absent key would
        leave the last run's value in place)."""
        return {"source": self.source, "runId": self.run_id,
                "promotedAt": None if self.promoted_at is None else clock.format(
                    self.promoted_at)}

    def since(self, window_start: datetime.datetime | None) -> str:
        """A note for messages when the window starts at the promotion, else ""."""
        if self.promoted_at is None or window_start is None or window_start != self.promoted_at:
            return ""
        return f" since {self.run_id} was promoted at {clock.format(self.promoted_at)}"


def pointer_uri(spec: DriftMonitorSpec, source: Obj | None) -> str | None:
    """Where the monitored model's production pointer is: ``<output>/<model>/production.json``
    of the monitored TrainingJob (`source`); None when the spec names its profile or the job
    has no output."""
    if spec.model.profile_uri or source is None or spec.model.training_job is None:
        return None
    job_spec = source.get("spec") or {}
    output = (job_spec.get("output") or {}).get("uri")
    if not isinstance(output, str) or not output:
        return None
    model = (job_spec.get("model") or {}).get("name") or spec.model.training_job
    return uris.join(output, str(model), PRODUCTION_POINTER)


def reference(spec: DriftMonitorSpec, source: Obj | None, pointer: object,
              pointer_at: str | None = None) -> Reference | Failure:
    """What the check compares with: the spec's profile; else the run the production pointer
    (`pointer`, the parsed ``production.json`` read from `pointer_at`, None when there is none)
    names; else the monitored TrainingJob's run."""
    if spec.model.profile_uri:
        return Reference(spec.model.profile_uri, SOURCE_PROFILE_URI)
    if pointer is not None:
        return _promoted(pointer, pointer_at or PRODUCTION_POINTER)
    uri = reference_profile_uri(spec, source)
    if isinstance(uri, Failure):
        return uri
    run = ((source or {}).get("status") or {}).get("runId")
    return Reference(uri, SOURCE_TRAININGJOB, run_id=str(run) if run else None)


def reference_profile_uri(spec: DriftMonitorSpec, source: Obj | None) -> str | Failure:
    """Where the reference profile is without a promotion: the spec's, or the monitored
    TrainingJob's (`source`)."""
    if spec.model.profile_uri:
        return spec.model.profile_uri
    if source is None:
        return Failure(c.REASON_TRAININGJOB_NOT_FOUND,
                       f"TrainingJob {spec.model.training_job!r} not found")
    artifacts = (source.get("status") or {}).get("artifacts") or {}
    uri = artifacts.get("referenceProfileUri") or (
        uris.join(artifacts["runUri"], ARTIFACT_REFERENCE_PROFILE) if artifacts.get("runUri")
        else None)
    if not uri:
        return Failure(c.REASON_PROFILE_NOT_FOUND,
                       f"TrainingJob {spec.model.training_job!r} has no reference profile yet "
                       f"(it has not succeeded)")
    return str(uri)


def invalid_pointer(uri: str, why: str) -> Failure:
    """A production pointer the monitor cannot follow. The check fails (and is retried at the
    next interval) rather than compare with a profile that may not be production's."""
    return Failure(c.REASON_PROFILE_NOT_FOUND,
                   f"the production pointer {uri} cannot be followed: {why}")


def _promoted(pointer: object, uri: str) -> Reference | Failure:
    """The run a production pointer names (tailor_trainer.artifacts.promote writes it)."""
    if not isinstance(pointer, Mapping):
        return invalid_pointer(uri, f"a JSON object was expected, not {type(pointer).__name__}")
    run_id, artifacts = pointer.get("runId"), pointer.get("artifactUri")
    if not isinstance(run_id, str) or not run_id:
        return invalid_pointer(uri, "it has no runId")
    profile = pointer.get("referenceProfileUri")
    if not isinstance(profile, str) or not uris.is_s3(profile):
        if not isinstance(artifacts, str) or not uris.is_s3(artifacts):
            return invalid_pointer(uri, f"its artifactUri {artifacts!r} is not an s3:// URI")
        profile = uris.join(artifacts, ARTIFACT_REFERENCE_PROFILE)
    promoted = _moment(pointer.get("promotedAt"))
    if isinstance(promoted, str):
        return invalid_pointer(uri, promoted)
    return Reference(profile, SOURCE_PRODUCTION_POINTER, run_id=run_id, promoted_at=promoted)


def _moment(value: object) -> datetime.datetime | str | None:
    """``promotedAt``: seconds since the epoch (what the trainer writes) or RFC 3339; None when
    absent (the whole window counts); a message when it is neither."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.datetime.fromtimestamp(value, datetime.UTC)
        except (OverflowError, OSError, ValueError):
            return f"its promotedAt {value!r} is not a time"
    if isinstance(value, str):
        try:
            return clock.parse(value)
        except ValueError:
            pass
    return f"its promotedAt {value!r} is neither seconds since the epoch nor RFC 3339"
