"""The search phase of a tuned TrainingJob as a pure function: trials observed -> what to do.

`assess_search` reads status.tuning (every trial's parameters, state, attempts and validation
curve), the trials' worker groups (Indexed Jobs, one per trial), the pods of those that finished
and the curves just scraped from running trials, and returns the new status.tuning, the trial
groups to start and to delete, the Events of each trial's transitions, and the search's outcome
once there is one (completed: the final run follows; failed: the job fails).

Trial states (constants.TRIAL_*): Pending (asked, its group not running: new, restarting, or
waiting out a suspend), Running (its group exists), then Completed, Pruned or Failed. A trial's
parameters are in status before its group is created, so a crash in between loses nothing: the
next reconcile finds a trial without a group and creates it (same number, same parameters).
A retryable failure restarts the trial (attempts + 1) up to runPolicy.backoffLimit; a permanent
one fails the trial, unless its reason condemns every trial alike (bad spec or data), which fails
the job at once.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from tailor_contract import constants as c
from tailor_contract.trainingjob import TrainingJobSpec

from tailor.assess import workers
from tailor.assess.conditions import Event, find
from tailor.assess.search import Params, Search, best_value
from tailor.builders.trainingjob import ANNOTATION_ATTEMPT

MAX_CURVE_POINTS = 100
JOB_LEVEL_REASONS = frozenset({
    c.REASON_INVALID_SPEC, c.REASON_DATA_QUALITY_FAILED, c.REASON_SECRET_NOT_FOUND,
    "DataUnreadable", "StorageAccessDenied", "BaseModelUnusable", "TestSetChanged"})
"""Permanent failures that no choice of hyper-parameters can avoid: the job fails at once."""
ACTIVE = (c.TRIAL_PENDING, c.TRIAL_RUNNING)
FINISHED = (c.TRIAL_COMPLETED, c.TRIAL_PRUNED, c.TRIAL_FAILED)


@dataclass(frozen=True)
class TrialStart:
    """A trial's worker group to create: `attempt` counts its earlier starts."""

    number: int
    attempt: int
    parameters: Params


@dataclass
class SearchStep:
    tuning: dict[str, Any]
    starts: list[TrialStart] = field(default_factory=list)
    deletes: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    failure: tuple[str, str] | None = None
    """(reason, message) when the search failed and with it the job."""

    @property
    def completed(self) -> bool:
        return self.tuning.get("state") == c.SEARCH_COMPLETED


@dataclass
class Observed:
    """What the controller saw of the trials: their groups, the pods of the finished ones,
    and freshly scraped validation curves of running ones."""

    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    pods: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    curves: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


def trial_number(job: dict[str, Any]) -> int:
    return int((job.get("metadata", {}).get("labels") or {}).get(c.LABEL_TRIAL, "-1"))


def search_done(status: dict[str, Any]) -> bool:
    """The search has ended (completed or failed): trials no longer matter."""
    return (status.get("tuning") or {}).get("state") in (c.SEARCH_COMPLETED, c.SEARCH_FAILED)


def _job_finished(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    cond = find((job.get("status") or {}).get("conditions"), kind)
    return cond if cond is not None and cond.get("status") == "True" else None


def needs_pods(status: dict[str, Any], job: dict[str, Any]) -> bool:
    """Whether a trial group's pods are worth reading: it finished and its trial, still
    active in status, waits to learn how."""
    number = trial_number(job)
    trials = (status.get("tuning") or {}).get("trials") or []
    active = number < len(trials) and trials[number].get("state") in ACTIVE
    return active and bool(_job_finished(job, "Complete") or _job_finished(job, "Failed"))


class _Step:
    def __init__(self, body: dict[str, Any], spec: TrainingJobSpec, now: str) -> None:
        assert spec.tuning is not None
        self.spec, self.tuning, self.now = spec, spec.tuning, now
        old = (body.get("status") or {}).get("tuning") or {}
        self.status = copy.deepcopy(old) or {"state": c.SEARCH_SEARCHING, "trials": []}
        self.status["objective"] = {"metric": self.tuning.objective.metric,
                                    "direction": self.tuning.direction}
        self.trials: list[dict[str, Any]] = self.status["trials"]
        self.name = body["metadata"].get("uid", "search")
        self.out = SearchStep(self.status)
        self._search: Search | None = None
        self.exhausted = False
        """Every point of a discrete space has been tried: the search ends early."""

    @property
    def search(self) -> Search:
        """The study, replayed once per decision and only when a decision needs it."""
        if self._search is None:
            hp = self.spec.hyperparameters
            self._search = Search(self.tuning, self.trials, name=self.name,
                                  default_seed=hp.seed,
                                  max_epochs=self.tuning.max_epochs(hp.epochs))
        return self._search

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.out.events.append(Event(type_, reason, message))

    def end(self, trial: dict[str, Any], state: str, reason: str = "", message: str = ""
            ) -> None:
        trial["state"], trial["completionTime"] = state, self.now
        if reason:
            trial["reason"] = reason
        if message:
            trial["message"] = message[:workers.MESSAGE_LIMIT]
        self._search = None  # the study changed

    # ------------------------------------------------------------------ each trial
    def observe(self, trial: dict[str, Any], seen: Observed, suspended: bool) -> None:
        number = int(trial["number"])
        job = seen.jobs.get(number)
        if number in seen.curves and len(seen.curves[number]) > len(trial.get("curve") or []):
            trial["curve"] = seen.curves[number][-MAX_CURVE_POINTS:]
            self._search = None  # the study must see the new curve
            if job is not None and self._prune(trial, job):
                return
        if job is None:
            if suspended:
                trial["state"] = c.TRIAL_PENDING
            else:
                self._start(trial)
            return
        if job["metadata"].get("deletionTimestamp"):
            return
        if suspended or _attempt(job) != int(trial.get("attempts", 1)) - 1:
            self.out.deletes.append(job)
            trial["state"] = c.TRIAL_PENDING
        elif _job_finished(job, "Complete"):
            self._completed(trial, seen.pods.get(number) or [])
        elif failed := _job_finished(job, "Failed"):
            self._failed(trial, job, failed, seen.pods.get(number) or [])
        else:
            trial["state"] = c.TRIAL_RUNNING

    def _start(self, trial: dict[str, Any]) -> None:
        if trial.get("state") != c.TRIAL_RUNNING:
            self.event("Normal", c.REASON_TRIAL_STARTED if trial.get("attempts", 1) == 1
                       else c.REASON_TRIAL_RESTARTED,
                       f"trial {trial['number']} (attempt {trial.get('attempts', 1)}): "
                       f"{_params_text(trial['parameters'])}")
        trial["state"] = c.TRIAL_RUNNING
        self.out.starts.append(TrialStart(int(trial["number"]), int(trial.get("attempts", 1)) - 1,
                                          dict(trial["parameters"])))

    def _prune(self, trial: dict[str, Any], job: dict[str, Any]) -> bool:
        curve = trial["curve"]
        if self.tuning.early_stopping is None:
            return False
        stop, recorded = self.search.should_prune(trial["number"])
        if recorded:
            trial["pruner"] = recorded
        planned = int(trial["parameters"].get("epochs", self.spec.hyperparameters.epochs))
        if not stop or curve[-1]["epoch"] >= planned:
            return False  # to go on, or it trained its last epoch (its rung is recorded)
        trial["value"] = float(curve[-1]["value"])
        self.end(trial, c.TRIAL_PRUNED, c.REASON_TRIAL_PRUNED,
                 f"stopped after epoch {curve[-1]['epoch']}: {self._metric()} "
                 f"{trial['value']:.4f} is worse than the {self.tuning.early_stopping.algorithm} "
                 "rule allows")
        self.out.deletes.append(job)
        self.event("Normal", c.REASON_TRIAL_PRUNED, f"trial {trial['number']} {trial['message']}")
        return True

    def _completed(self, trial: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        reported = next((s.trial for s in workers.summaries(pods) if s.trial), {})
        curve = [{"epoch": int(e), "value": float(v)} for e, v in reported.get("curve") or []]
        if curve:
            trial["curve"] = curve[-MAX_CURVE_POINTS:]
        value = reported.get("value", best_value(trial.get("curve") or [], self.tuning.direction))
        if value is None:
            self.end(trial, c.TRIAL_FAILED, c.REASON_TRIAL_FAILED,
                     "the trial finished without reporting a validation score")
            self.event("Warning", c.REASON_TRIAL_FAILED, f"trial {trial['number']}: "
                       f"{trial['message']}")
            return
        trial["value"] = float(value)
        self.end(trial, c.TRIAL_COMPLETED)
        self.event("Normal", c.REASON_TRIAL_COMPLETED,
                   f"trial {trial['number']}: validation {self._metric()} {value:.4f} with "
                   f"{_params_text(trial['parameters'])}")

    def _failed(self, trial: dict[str, Any], job: dict[str, Any], failed: dict[str, Any],
                pods: list[dict[str, Any]]) -> None:
        if failed.get("reason") == "DeadlineExceeded":
            limit = self.spec.run_policy.active_deadline_seconds
            self.out.failure = (c.REASON_DEADLINE_EXCEEDED,
                                f"the job ran longer than activeDeadlineSeconds ({limit}s)")
            return
        failure = workers.diagnose(pods)
        number, attempts = trial["number"], int(trial.get("attempts", 1))
        if failure.permanent and failure.reason in JOB_LEVEL_REASONS:
            self.out.failure = (failure.reason, f"trial {number} failed permanently: "
                                f"{failure.message}")
        elif not failure.permanent and attempts <= self.spec.run_policy.backoff_limit:
            trial["attempts"], trial["state"] = attempts + 1, c.TRIAL_PENDING
            trial["reason"], trial["message"] = failure.reason, failure.message[:512]
            self.out.deletes.append(job)
        else:
            reason = failure.reason if failure.permanent else c.REASON_BACKOFF_LIMIT_EXCEEDED
            self.end(trial, c.TRIAL_FAILED, reason, failure.message if failure.permanent else
                     f"failed {attempts} times; last: {failure.reason}: {failure.message}")
            self.event("Warning", c.REASON_TRIAL_FAILED,
                       f"trial {number} failed ({reason}): {trial['message']}")

    def _metric(self) -> str:
        return self.tuning.objective.metric

    # ------------------------------------------------------------------ the search
    def fill(self) -> None:
        """Ask for new trials up to parallelTrials at once and the search's capacity."""
        capacity = self.search.capacity()
        while len(self.trials) < capacity and \
                sum(t["state"] in ACTIVE for t in self.trials) < self.tuning.parallel_trials:
            parameters = self.search.ask()
            if parameters is None:
                self.exhausted = True
                return
            trial = {"number": len(self.trials), "parameters": parameters,
                     "state": c.TRIAL_PENDING, "attempts": 1, "startTime": self.now}
            self.trials.append(trial)
            self._start(trial)

    def conclude(self) -> None:
        """Counts, the best trial, and the search's end: too many failures, or every trial
        asked and finished."""
        counts = {state: sum(t["state"] == state for t in self.trials) for state in
                  c.TRIAL_STATES}
        status = self.status
        status["trialsCompleted"] = counts[c.TRIAL_COMPLETED]
        status["trialsPruned"] = counts[c.TRIAL_PRUNED]
        status["trialsFailed"] = counts[c.TRIAL_FAILED]
        status["trialsRunning"] = counts[c.TRIAL_RUNNING]
        best = self._best()
        if best is not None:
            status["bestTrial"] = {"number": best["number"], "parameters": best["parameters"],
                                   "value": best["value"]}
        finished = sum(counts[s] for s in FINISHED)
        capacity = len(self.trials) if self.exhausted else self.search.capacity()
        status["summary"] = f"{finished}/{capacity} trials" + (
            f", best {best['value']:.4g}" if best is not None else "")
        limit = self.tuning.max_failed_trials
        if self.out.failure is None and limit is not None and counts[c.TRIAL_FAILED] > limit:
            self.out.failure = (c.REASON_TOO_MANY_FAILED_TRIALS,
                                f"{counts[c.TRIAL_FAILED]} trials failed (maxFailedTrials "
                                f"{limit}); last: {self._last_failure()}")
        elif self.out.failure is None and finished == len(self.trials) >= capacity:
            if best is None:
                self.out.failure = (c.REASON_NO_SUCCESSFUL_TRIAL,
                                    f"none of the {capacity} trials completed; last failure: "
                                    f"{self._last_failure()}")
            else:
                status["state"] = c.SEARCH_COMPLETED
                self.event("Normal", c.REASON_SEARCH_COMPLETED,
                           f"best of {capacity} trials: trial {best['number']}, validation "
                           f"{self._metric()} {best['value']:.4f} with "
                           f"{_params_text(best['parameters'])}; the final run trains with it")
        if self.out.failure is not None:
            status["state"] = c.SEARCH_FAILED

    def _best(self) -> dict[str, Any] | None:
        done = [t for t in self.trials if t["state"] == c.TRIAL_COMPLETED and "value" in t]
        if not done:
            return None
        sign = 1 if self.tuning.direction == "maximize" else -1
        return max(done, key=lambda t: (sign * t["value"], -t["number"]))

    def _last_failure(self) -> str:
        failed = [t for t in self.trials if t["state"] == c.TRIAL_FAILED]
        if not failed:
            return "none"
        last = failed[-1]
        return f"trial {last['number']}: {last.get('reason', '')}: {last.get('message', '')}"


def assess_search(body: dict[str, Any], spec: TrainingJobSpec, seen: Observed, now: str, *,
                  suspended: bool = False, stop: tuple[str, str] | None = None) -> SearchStep:
    """One step of the search (see the module docstring). With `suspended`, every trial group
    is stopped and nothing new is asked; the trials resume, same numbers, when it is lifted.
    `stop` (reason, message) ends the search as failed (the job's deadline passed)."""
    step = _Step(body, spec, now)
    step.out.failure = stop
    for trial in step.trials:
        if trial["state"] in ACTIVE and stop is None:
            step.observe(trial, seen, suspended)
    if not suspended and step.out.failure is None:
        step.fill()
    step.conclude()
    if step.out.failure is not None:
        # Stop every group still running; nothing more is started.
        step.out.starts = []
        deleting = {id(j) for j in step.out.deletes}
        step.out.deletes += [j for j in seen.jobs.values() if id(j) not in deleting
                             and not j["metadata"].get("deletionTimestamp")]
        for trial in step.trials:
            if trial["state"] in ACTIVE:
                step.end(trial, c.TRIAL_FAILED, step.out.failure[0], "the search stopped")
        step.conclude()
    return step.out


def _attempt(job: dict[str, Any]) -> int:
    return int((job["metadata"].get("annotations") or {}).get(ANNOTATION_ATTEMPT, "0"))


def _params_text(parameters: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in sorted(parameters.items()))


def summary_for_final_run(spec: TrainingJobSpec, tuning: dict[str, Any]) -> dict[str, Any]:
    """What the final run is told of the search (trainer_api.ENV_SEARCH)."""
    assert spec.tuning is not None
    api = spec.tuning.to_api()
    trials = [{k: t[k] for k in ("number", "parameters", "state", "value") if k in t}
              | ({"epochs": len(t["curve"])} if t.get("curve") else {})
              for t in tuning.get("trials") or []]
    return {"objective": tuning.get("objective"), "algorithm": api.get("algorithm"),
            "earlyStopping": api.get("earlyStopping"), "searchSpace": api.get("searchSpace"),
            "maxTrials": api.get("maxTrials"), "trials": trials, "best": tuning.get("bestTrial")}


def final_parameters(tuning: dict[str, Any]) -> dict[str, Any]:
    return dict((tuning.get("bestTrial") or {}).get("parameters") or {})


__all__ = ["Observed", "SearchStep", "TrialStart", "assess_search",
           "final_parameters", "needs_pods", "search_done", "summary_for_final_run",
           "trial_number"]
