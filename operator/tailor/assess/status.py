"""A TrainingJob's new status, built from the old one: the conditions that go with each phase,
the worker counts, the trainer's reports, and one Event per change of phase."""

from __future__ import annotations

import copy
from typing import Any

from tailor_contract import clock
from tailor_contract import constants as c
from tailor_contract.trainer_api import TerminationSummary
from tailor_contract.trainingjob import TrainingJobSpec

from tailor.assess import workers
from tailor.assess.conditions import Event, find, is_true, reason_of, upsert
from tailor.assess.workers import Failure


def seconds_between(start: str, end: str) -> float:
    """Seconds from one RFC 3339 time to another."""
    return (clock.parse(end) - clock.parse(start)).total_seconds()


class JobStatus:
    """Builds the new status from the old one."""

    def __init__(self, body: dict[str, Any], spec: TrainingJobSpec, now: str) -> None:
        self.old = body.get("status") or {}
        self.new = copy.deepcopy(self.old)
        self.generation = body.get("metadata", {}).get("generation")
        self.now = now
        self.new["observedGeneration"] = self.generation
        workers_ = self.new.setdefault("workers", {})
        workers_.setdefault("restarts", 0)
        workers_["desired"] = spec.workers
        self.attempt = int(workers_["restarts"])

    def finished(self) -> bool:
        conditions = self.new.get("conditions")
        return is_true(conditions, c.CONDITION_SUCCEEDED) or is_true(conditions,
                                                                     c.CONDITION_FAILED)

    def condition(self, kind: str, value: bool | None, reason: str, message: str) -> None:
        self.new["conditions"] = upsert(self.new.get("conditions"), kind, value, reason,
                                        message, self.generation, self.now)

    def awaiting_report(self) -> None:
        """What only the trainer can tell is Unknown until it does (set once, at the start)."""
        for kind in (c.CONDITION_DATA_QUALITY_PASSED, c.CONDITION_PROMOTED):
            if find(self.new.get("conditions"), kind) is None:
                self.condition(kind, None, c.REASON_PENDING,
                               "the trainer reports it when the run ends")

    def phase(self, phase: str, reason: str, message: str, *, running: bool = False,
              suspended: bool = False, reconciling: bool = True, stalled: bool = False
              ) -> None:
        """Every non-terminal phase: the conditions that go with it. `stalled`: a worker
        cannot start without someone's help (kstatus: Stalled, so not Reconciling)."""
        self.new["phase"] = phase
        self.condition(c.CONDITION_RUNNING, running, reason, message)
        self.condition(c.CONDITION_SUSPENDED, suspended, reason, message if suspended else "")
        self.condition(c.CONDITION_READY, False, reason, message)
        self.condition(c.CONDITION_RECONCILING, reconciling and not stalled, reason, message)
        self.condition(c.CONDITION_STALLED, stalled, reason, message if stalled else "")
        self.condition(c.CONDITION_SUCCEEDED, False, reason, "")
        self.condition(c.CONDITION_FAILED, False, reason, "")

    def counts(self, job: dict[str, Any] | None) -> None:
        js = (job or {}).get("status", {})
        workers_ = self.new["workers"]
        for key in ("active", "ready", "succeeded", "failed"):
            workers_[key] = int(js.get(key, 0) or 0)
        workers_["summary"] = f"{workers_['ready']}/{workers_['desired']}"

    def finish(self, succeeded: bool, reason: str, message: str) -> None:
        self.new["phase"] = "Succeeded" if succeeded else "Failed"
        self.new["completionTime"] = self.now
        self.condition(c.CONDITION_SUCCEEDED, succeeded, reason, message if succeeded else "")
        self.condition(c.CONDITION_FAILED, not succeeded, reason, "" if succeeded else message)
        self.condition(c.CONDITION_READY, succeeded, reason, message)
        self.condition(c.CONDITION_STALLED, not succeeded, reason, "" if succeeded else message)
        self.condition(c.CONDITION_RECONCILING, False, reason, "")
        self.condition(c.CONDITION_RUNNING, False, reason, "")
        self.condition(c.CONDITION_SUSPENDED, False, reason, "")

    def report(self, summaries: list[TerminationSummary], failure: Failure | None = None,
               *, finished: bool = False, succeeded: bool = False) -> None:
        """DataQualityPassed and Promoted from what the trainer reported; a finished run that
        reported no gate says so (NotApplicable: a custom task, or a failure before it)."""
        quality = workers.data_quality(summaries, failure)
        if quality is None and finished and reason_of(
                self.new.get("conditions"), c.CONDITION_DATA_QUALITY_PASSED) == c.REASON_PENDING:
            quality = None, c.REASON_NOT_APPLICABLE, "the run reported no data-quality gate"
        if quality is not None:
            self.condition(c.CONDITION_DATA_QUALITY_PASSED, *quality)
        if finished:
            summary = summaries[0] if summaries else None
            self.condition(c.CONDITION_PROMOTED, *workers.promotion(summary, succeeded))

    def transition_events(self) -> list[Event]:
        """One Event per change of phase, worded from the conditions that changed with it."""
        old, new = self.old.get("phase"), self.new.get("phase")
        if old == new:
            return []
        conditions = self.new.get("conditions")
        if is_true(conditions, c.CONDITION_FAILED):
            failed = find(conditions, c.CONDITION_FAILED) or {}
            return [Event("Warning", failed.get("reason", "Failed"), failed.get("message", ""))]
        reconciling = find(conditions, c.CONDITION_RECONCILING) or {}
        reason = str(reconciling.get("reason") or new)
        if reason == c.REASON_RESTARTING:
            failure = self.new.get("failure", {})
            return [Event("Warning", c.REASON_RESTARTING,
                          f"restarting all workers (restart {self.new['workers']['restarts']}) "
                          f"after {failure.get('reason')}: {failure.get('message', '')}")]
        return [Event("Normal", reason,
                      reconciling.get("message") or f"phase {old or 'none'} -> {new}")]
