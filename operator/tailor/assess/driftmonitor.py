"""A DriftMonitor's decisions as pure functions: what was observed -> what to record and do.

`checked` turns a check's result, the parsed spec, the monitor's previous status, its retraining
TrainingJobs and the time into a `Decision`: the complete new status (check fields, conditions,
phase), the Events of any transition, and the retrain to create, if a trigger fires and neither
the cooldown nor a running retrain forbids it. `failed` does the same for a check that could not
run, `alerted` for a firing alert. The controller reads the inputs and applies the decision.

A retrain is recorded in status (`status.lastRetrain`, `retrainCount`, the `Retraining`
condition) in one place, `_retraining`, whichever trigger started it; the controller writes that
status (guarded by resourceVersion) before it creates the TrainingJob, so a restarted operator
finds the record and creates the same name again (`_recorded_but_missing`). The cooldown runs
from that record's time, whatever was promoted since.

What a check compared with (the run the production pointer names, and since when:
`tailor.assess.drift_reference`) is recorded as `status.profileUri` and `status.reference`.

Conditions (documented in docs/operator.md): Ready (the last check ran), Reconciling, Stalled
(an invalid spec or a missing Secret), DriftDetected, AccuracyBelowThreshold and Retraining.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tailor_contract import clock, names
from tailor_contract import constants as c
from tailor_contract.common import parse_duration
from tailor_contract.driftmonitor import DriftMonitorSpec, RetrainTrigger

from tailor.assess.conditions import Event, find, is_true, upsert
from tailor.assess.drift_status import check_status

if TYPE_CHECKING:
    from tailor.assess.drift_reference import Reference
    from tailor.drift.result import CheckResult

Obj = dict[str, Any]
STALLING = frozenset({c.REASON_INVALID_SPEC, c.REASON_SECRET_NOT_FOUND})
"""Failures that no retry fixes until someone changes the spec or creates the Secret."""
RECORD_KEPT = datetime.timedelta(hours=1)
"""A recorded retrain is created after a restart within max(cooldown, this) of its record."""
FINISHED = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Failure:
    """A check that cannot run; `reason` is a condition reason."""

    reason: str
    message: str

    @property
    def stalled(self) -> bool:
        return self.reason in STALLING


@dataclass(frozen=True)
class Retrains:
    """The retraining TrainingJobs this monitor created (listed by its label), by name: their
    phase (None while they have none)."""

    phases: Mapping[str, str | None] = field(default_factory=dict)

    @classmethod
    def of(cls, jobs: list[Obj]) -> Retrains:
        return cls({j["metadata"]["name"]: (j.get("status") or {}).get("phase") for j in jobs})

    @property
    def running(self) -> list[str]:
        return sorted(name for name, phase in self.phases.items() if phase not in FINISHED)


@dataclass
class Decision:
    status: Obj
    events: list[Event] = field(default_factory=list)
    trigger: RetrainTrigger | None = None
    """What the check or alert asks for (it may be blocked)."""
    blocked: str | None = None
    """Why the trigger waits: CooldownActive or RetrainRunning."""
    retrain: RetrainTrigger | None = None
    """The retrain to create once the status is written: this trigger's (recorded in status),
    or one recorded before a restart whose TrainingJob is missing."""
    error: str | None = None
    """A failed check's reason (counted in tailor_drift_check_errors_total)."""
    outcome: str | None = None
    """An alert that starts nothing: why (duplicate, alerts-do-not-retrain, CooldownActive...)."""


class _Status:
    """Builds the new status from the old one."""

    def __init__(self, body: Obj, now: datetime.datetime, *, observe: bool = True) -> None:
        self.old: Obj = body.get("status") or {}
        self.new: Obj = copy.deepcopy(self.old)
        self.generation = body["metadata"].get("generation")
        self.name = body["metadata"]["name"]
        self.now = now
        self.stamp = clock.format(now)
        if observe:  # an alert observes no spec: the next check must still run on a new one
            self.new["observedGeneration"] = self.generation

    def condition(self, kind: str, value: bool | None, reason: str, message: str) -> None:
        self.new["conditions"] = upsert(self.new.get("conditions"), kind, value, reason,
                                        message, self.generation, self.stamp)

    def phase(self) -> None:
        """For humans; programs read the conditions it is derived from."""
        conditions = self.new.get("conditions")
        self.new["phase"] = ("Retraining" if is_true(conditions, c.CONDITION_RETRAINING) else
                             "Degraded" if is_true(conditions,
                                                   c.CONDITION_ACCURACY_BELOW_THRESHOLD) else
                             "Drifting" if is_true(conditions, c.CONDITION_DRIFT_DETECTED) else
                             "Healthy")

    def transition_events(self) -> list[Event]:
        events = []
        for kind in (c.CONDITION_DRIFT_DETECTED, c.CONDITION_ACCURACY_BELOW_THRESHOLD):
            before = find(self.old.get("conditions"), kind) or {}
            after = find(self.new.get("conditions"), kind) or {}
            if after.get("status") == "True" and before.get("status") != "True":
                events.append(Event("Warning", after["reason"], after.get("message", "")))
            elif after.get("status") == "False" and before.get("status") == "True":
                events.append(Event("Normal", after["reason"], after.get("message", "")))
        return events


def due(body: Obj, now: datetime.datetime) -> bool:
    """A check is due when the spec changed since the last one or its interval has passed."""
    status = body.get("status") or {}
    if status.get("observedGeneration") != body["metadata"].get("generation"):
        return True
    last = status.get("lastCheckTime")
    if not last:
        return True
    try:
        interval = parse_duration((body.get("spec") or {}).get("interval", "5m"))
    except ValueError:
        return False
    return now - clock.parse(last) >= interval


def checked(body: Obj, spec: DriftMonitorSpec, result: CheckResult, reference: Reference,
            retrains: Retrains, now: datetime.datetime) -> Decision:
    """The decision after a check ran: status, conditions, events and the retrain to start.
    `reference` is what the check compared with (tailor.assess.drift_reference)."""
    s = _Status(body, now)
    s.new |= check_status(result)
    s.new["lastCheckTime"] = s.stamp
    s.new["profileUri"] = reference.profile_uri
    s.new["reference"] = reference.status()
    s.condition(c.CONDITION_READY, True, c.REASON_CHECKED,
                f"checked {result.predictions} predictions, {result.labeled} labelled"
                + reference.since(result.window_start))
    s.condition(c.CONDITION_STALLED, False, c.REASON_CHECKED, "")
    s.condition(c.CONDITION_RECONCILING, False, c.REASON_CHECKED, "")
    _drift_condition(s, result)
    below, reason, message = _accuracy_verdict(result)
    s.condition(c.CONDITION_ACCURACY_BELOW_THRESHOLD, below, reason, message)
    trigger = _check_trigger(body, spec, result, bool(below), message, now)
    blocked = _retraining(s, spec, trigger, retrains)
    s.phase()
    started = trigger if trigger is not None and blocked is None else None
    return Decision(s.new, _followed(s.old, reference) + s.transition_events(), trigger=trigger,
                    blocked=blocked, retrain=started or _recorded_but_missing(s, spec, retrains))


def failed(body: Obj, failure: Failure, now: datetime.datetime) -> Decision:
    """The decision after a check could not run: Ready False (Stalled if no retry can help);
    it is retried at the next interval, not in a tight loop."""
    s = _Status(body, now)
    reason, message, stalled = failure.reason, failure.message, failure.stalled
    s.condition(c.CONDITION_READY, False, reason, message)
    s.condition(c.CONDITION_STALLED, stalled, reason, message if stalled else "")
    s.condition(c.CONDITION_RECONCILING, not stalled, reason, "" if stalled else message)
    for kind in (c.CONDITION_DRIFT_DETECTED, c.CONDITION_ACCURACY_BELOW_THRESHOLD,
                 c.CONDITION_RETRAINING):
        if find(s.new.get("conditions"), kind) is None:
            s.condition(kind, None, reason, "no check yet")
    s.new["phase"] = "Error" if stalled else s.new.get("phase", "Pending")
    s.new["lastCheckTime"] = s.stamp
    ready = find(s.old.get("conditions"), c.CONDITION_READY) or {}
    events = [Event("Warning", reason, message)] if ready.get("reason") != reason else []
    return Decision(s.new, events, error=reason)


def alerted(body: Obj, spec: DriftMonitorSpec, alert: Obj, retrains: Retrains,
            now: datetime.datetime) -> Decision:
    """A firing alert about this monitor: a retrain on the last check's window, deduplicated
    by the alert's fingerprint and start, subject to the triggers, cooldown and concurrency."""
    s = _Status(body, now, observe=False)
    if not spec.retrains_on(c.TRIGGER_ALERT):
        return Decision(s.new, outcome="alerts-do-not-retrain")
    identity = f"alert:{alert.get('fingerprint', '')}:{alert.get('startsAt', '')}"
    summary = (alert.get("annotations") or {}).get("summary") or \
        (alert.get("labels") or {}).get("alertname", "alert")
    # The alert is about the metric of the last check: its window is the data.
    window = s.new.get("window") or {}
    end = window.get("end") or s.stamp
    start = window.get("start") or clock.format(
        clock.parse(end) - parse_duration(spec.production.window))
    trigger = RetrainTrigger(c.TRIGGER_ALERT, identity, f"alert: {summary}", start, end)
    name = names.retrain_job_name(body["metadata"]["name"], identity)
    if (s.new.get("lastRetrain") or {}).get("trigger") == identity or name in retrains.phases:
        return Decision(s.new, trigger=trigger, outcome="duplicate")
    blocked = _retraining(s, spec, trigger, retrains)
    if blocked is not None:  # nothing is written: the last check's status stands
        return Decision(s.old, trigger=trigger, blocked=blocked, outcome=blocked)
    s.phase()
    return Decision(s.new, trigger=trigger, retrain=trigger)


def _followed(old: Obj, reference: Reference) -> list[Event]:
    """An Event when the checks start following a newly promoted model (not on the first
    check: a new monitor has nothing to switch from)."""
    before = old.get("profileUri")
    if not before or before == reference.profile_uri or not reference.promoted_at:
        return []
    return [Event("Normal", c.REASON_PROMOTED,
                  f"{reference.run_id} is in production since "
                  f"{clock.format(reference.promoted_at)}: checks now compare with its "
                  f"reference profile {reference.profile_uri} and count the predictions made "
                  f"since then")]


def _drift_condition(s: _Status, result: CheckResult) -> None:
    if not result.sufficient_samples:
        s.condition(c.CONDITION_DRIFT_DETECTED, None, c.REASON_INSUFFICIENT_SAMPLES,
                    f"{result.predictions} predictions in the window; {result.min_samples} "
                    f"needed")
    elif result.drift_detected:
        reason = c.REASON_FEATURE_DRIFT if result.feature_drift else c.REASON_PREDICTION_DRIFT
        s.condition(c.CONDITION_DRIFT_DETECTED, True, reason, result.drift_reason)
    else:
        s.condition(c.CONDITION_DRIFT_DETECTED, False, c.REASON_NO_DRIFT,
                    f"{s.new.get('driftSummary', '0/0')} features drifted")


def _accuracy_verdict(result: CheckResult) -> tuple[bool | None, str, str]:
    """The AccuracyBelowThreshold condition. The check applied the threshold and minLabeled
    (its AccuracyResult carries both); this only words its verdict."""
    accuracy = result.accuracy
    if accuracy is None:
        return False, c.REASON_NOT_APPLICABLE, "no accuracy check is configured"
    if accuracy.value is None or not accuracy.sufficient_labels:
        return None, c.REASON_INSUFFICIENT_SAMPLES, (
            f"{accuracy.samples} labelled predictions in the window; {accuracy.min_labeled} "
            f"needed")
    message = (f"{accuracy.metric} {accuracy.value:.3f} (CI {accuracy.lower:.3f}-"
               f"{accuracy.upper:.3f}, n={accuracy.samples}); threshold {accuracy.threshold}")
    below = accuracy.below_threshold
    return below, c.REASON_ACCURACY_BELOW_THRESHOLD if below else c.REASON_ACCURACY_OK, message


def _check_trigger(body: Obj, spec: DriftMonitorSpec, result: CheckResult, below: bool,
                   accuracy_message: str, now: datetime.datetime) -> RetrainTrigger | None:
    """The check's trigger, if it asks for a retrain: accuracy first, then drift. Its identity
    is the window (monitor uid and window end) and the reason."""
    end = clock.format(result.window_end or now)
    start = clock.format(result.window_start) if result.window_start is not None else None
    window_id = f"{body['metadata']['uid']}:{end}"
    if below and spec.retrains_on(c.TRIGGER_ACCURACY_BELOW_THRESHOLD):
        return RetrainTrigger(c.TRIGGER_ACCURACY_BELOW_THRESHOLD,
                              f"{window_id}:{c.TRIGGER_ACCURACY_BELOW_THRESHOLD}",
                              accuracy_message, start, end)
    if result.drift_detected and spec.retrains_on(c.TRIGGER_DRIFT_DETECTED):
        return RetrainTrigger(c.TRIGGER_DRIFT_DETECTED, f"{window_id}:{c.TRIGGER_DRIFT_DETECTED}",
                              result.drift_reason, start, end)
    return None


def _blocked(spec: DriftMonitorSpec, status: Obj, running: list[str],
             now: datetime.datetime) -> tuple[str, str] | None:
    """Why a retrain cannot start now (a reason and a message), or None."""
    if running and spec.retrain.concurrency_policy == "Forbid":
        return c.REASON_RETRAIN_RUNNING, f"TrainingJob {running[0]} is still running"
    last = (status.get("lastRetrain") or {}).get("time")
    if last:
        until = clock.parse(last) + parse_duration(spec.retrain.cooldown)
        if now < until:
            return c.REASON_COOLDOWN, f"the cooldown lasts until {clock.format(until)}"
    return None


def _retraining(s: _Status, spec: DriftMonitorSpec, trigger: RetrainTrigger | None,
                retrains: Retrains) -> str | None:
    """Set the Retraining condition, and record a retrain when `trigger` may start one: the one
    place that writes status.lastRetrain, retrainCount and the condition, whatever the trigger.
    Returns the reason that keeps the trigger waiting (CooldownActive, RetrainRunning)."""
    running = retrains.running
    if trigger is not None:
        blocked = _blocked(spec, s.new, running, s.now)
        if blocked is not None:
            s.condition(c.CONDITION_RETRAINING, bool(running), *blocked)
            return blocked[0]
        name = names.retrain_job_name(s.name, trigger.identity)
        s.new["lastRetrain"] = trigger.record(name, s.stamp)
        s.new["retrainCount"] = int(s.new.get("retrainCount", 0)) + 1
        s.condition(c.CONDITION_RETRAINING, True, c.REASON_RETRAIN_CREATED,
                    f"created TrainingJob {name}: {trigger.message}")
    elif running:
        s.condition(c.CONDITION_RETRAINING, True, c.REASON_RETRAIN_RUNNING,
                    f"TrainingJob {running[0]} is running")
    elif not spec.retrain.enabled:
        s.condition(c.CONDITION_RETRAINING, False, c.REASON_RETRAIN_DISABLED,
                    "retrain.enabled is false: the monitor only watches")
    else:
        s.condition(c.CONDITION_RETRAINING, False, _last_outcome(s.new, retrains), "")
    return None


def _last_outcome(status: Obj, retrains: Retrains) -> str:
    """The Retraining condition's reason while nothing runs: how the last retrain ended."""
    last = (status.get("lastRetrain") or {}).get("name")
    if not last:
        return c.REASON_NOT_APPLICABLE
    return {"Succeeded": c.REASON_RETRAIN_SUCCEEDED, "Failed": c.REASON_RETRAIN_FAILED
            }.get(str(retrains.phases.get(last)), c.REASON_RETRAIN_CREATED)


def _recorded_but_missing(s: _Status, spec: DriftMonitorSpec,
                          retrains: Retrains) -> RetrainTrigger | None:
    """A retrain recorded in status whose TrainingJob does not exist: the operator died between
    recording and creating it. Recreated only while recent and only under the name its trigger
    gives (a record edited by hand creates nothing)."""
    last = s.new.get("lastRetrain") or {}
    if not last.get("name") or not spec.retrain.enabled or last["name"] in retrains.phases:
        return None
    kept = max(parse_duration(spec.retrain.cooldown), RECORD_KEPT)
    if s.now - clock.parse(last["time"]) > kept:
        return None
    if last["name"] != names.retrain_job_name(s.name, last["trigger"]):
        return None
    return RetrainTrigger.from_record(last, "recorded before a restart")
