"""The TrainingJob metrics a reconcile's transition updates: the phase gauge, durations of
finished jobs and restarts by reason."""

from __future__ import annotations

import threading
from collections import Counter

from tailor_contract import constants as c

from tailor.assess.conditions import is_true
from tailor.assess.status import seconds_between
from tailor.io import metrics
from tailor.io.k8s import Obj


def outcome(status: Obj) -> str | None:
    """`Succeeded` or `Failed` once the job has finished (its terminal condition), else None."""
    conditions = status.get("conditions")
    for kind in (c.CONDITION_SUCCEEDED, c.CONDITION_FAILED):
        if is_true(conditions, kind):
            return kind
    return None


class JobMetrics:
    """Keeps `tailor_trainingjobs{namespace,phase}` by counting transitions (a recount of
    every job on each reconcile was quadratic in the number of jobs)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()  # the counts are shared by all jobs' reconciles
        self._phases: dict[tuple[str, str], str] = {}
        self._counts: Counter[tuple[str, str]] = Counter()

    def record(self, key: tuple[str, str], old: Obj, new: Obj) -> None:
        """One reconcile's change of status, from `old` to `new`."""
        self.set_phase(key, new.get("phase", "Pending"))
        finished = outcome(new)
        if finished is not None and outcome(old) is None and new.get("startTime") and \
                new.get("completionTime"):
            duration = seconds_between(new["startTime"], new["completionTime"])
            metrics.JOB_DURATION.labels(finished).observe(duration)
        if new.get("workers", {}).get("restarts", 0) > old.get("workers", {}).get("restarts", 0):
            metrics.RESTARTS.labels(key[0], new.get("failure", {}).get("reason", "")).inc()

    def set_phase(self, key: tuple[str, str], phase: str | None) -> None:
        """Job `key` is now in `phase` (None: gone)."""
        with self._guard:
            old = self._phases.pop(key, None)
            if phase is not None:
                self._phases[key] = phase
            if old == phase:
                return
            for label, change in ((old, -1), (phase, 1)):
                if label is None:
                    continue
                counted = (key[0], label)
                self._counts[counted] += change
                if self._counts[counted] > 0:
                    metrics.TRAININGJOBS.labels(*counted).set(self._counts[counted])
                else:
                    del self._counts[counted]
                    metrics.TRAININGJOBS.remove(*counted)
