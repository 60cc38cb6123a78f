"""What a run selects its best epoch by, and trial mode's report of it.

An ordinary run keeps the epoch with the best evaluation.metric on the validation split (higher
is better). A trial of a hyper-parameter search (`trainer_api.ENV_TRIAL`, spec.tuning) keeps the
one with the best value of the search's objective instead, which may be the validation loss
(minimized): the search compares trials by exactly the number each trial selected its model
by. The objective only ever names a validation number; there is no way to name the test set.

A trial reports its objective after every validation (`Progress.objective_at`, one sample per
epoch, so the operator's pruner reads the whole curve in one scrape) and, at its end, the curve
in its termination message (`trial_report`), thinned to fit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tailor_contract import constants, trainer_api

from tailor_trainer.errors import REASON_INVALID_SPEC, PermanentError

METRICS = ("accuracy", "macro-f1", "loss")
DIRECTIONS = ("maximize", "minimize")
MAX_CURVE_POINTS = 100
"""Points of a curve in the termination message (status.tuning keeps at most as many)."""
REASON_NON_FINITE_LOSS = constants.REASON_NON_FINITE_LOSS


@dataclass(frozen=True)
class Objective:
    """A validation number and whether more or less of it is better."""

    metric: str
    direction: str = "maximize"

    def value(self, scores: Mapping[str, float]) -> float:
        return float(scores[self.metric])

    def score(self, scores: Mapping[str, float]) -> float:
        """The value as a number where higher is always better (what the loop compares)."""
        value = self.value(scores)
        return value if self.direction == "maximize" else -value


@dataclass(frozen=True)
class Trial:
    """Trial mode's settings, from TAILOR_TRIAL."""

    number: int
    objective: Objective
    search_run_id: str


def parse_trial(text: str) -> Trial:
    """TAILOR_TRIAL's JSON; anything else is a permanent InvalidSpec (the operator wrote it, so
    a retry would read the same)."""
    name = trainer_api.ENV_TRIAL
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise PermanentError(REASON_INVALID_SPEC, f"{name} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PermanentError(REASON_INVALID_SPEC, f"{name} must be a JSON object")
    number, metric = data.get("number"), data.get("metric")
    direction, search = data.get("direction"), data.get("searchRunId")
    problems = []
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        problems.append(f"number must be an integer >= 0, not {number!r}")
    if metric not in METRICS:
        problems.append(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    if direction not in DIRECTIONS:
        problems.append(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    if not isinstance(search, str) or not search:
        problems.append(f"searchRunId must be a non-empty string, not {search!r}")
    if problems:
        raise PermanentError(REASON_INVALID_SPEC, f"bad {name}: " + "; ".join(problems))
    assert isinstance(number, int) and isinstance(metric, str) and isinstance(direction, str)
    assert isinstance(search, str)
    return Trial(number, Objective(metric, direction), search)


def check_finite(loss: float, step: int, lr: float) -> None:
    """Stop a run whose training loss is NaN or infinite: it has diverged, and every later step
    would only spread the NaNs. Permanent: the same settings diverge again on a retry."""
    if math.isfinite(loss):
        return
    raise PermanentError(REASON_NON_FINITE_LOSS,
                         f"the training loss is {loss} at optimizer step {step} (learning rate "
                         f"{lr:.3g}): training diverged; lower hyperparameters.learningRate or "
                         "raise warmupRatio")


def curve(validations: Sequence[Mapping[str, float]],
          objective: Objective) -> list[tuple[int, float]]:
    """(epoch, value) after each validation: epoch k is the k-th validation (1, 2, ...)."""
    return [(k, objective.value(v)) for k, v in enumerate(validations, start=1)]


def thin(points: Sequence[tuple[int, float]], keep: int | None = None,
         limit: int = MAX_CURVE_POINTS) -> list[tuple[int, float]]:
    """At most `limit` points of a curve, evenly spread; the first, the last and the epoch
    `keep` (the best) always among them."""
    if len(points) <= limit:
        return list(points)
    if limit < 3:
        raise ValueError("a thinned curve keeps at least 3 points")
    last = len(points) - 1
    chosen = {0, last}
    chosen.update(i for i, (epoch, _) in enumerate(points) if epoch == keep)
    spread = limit - len(chosen)
    chosen.update(round(j * last / (spread + 1)) for j in range(1, spread + 1))
    # More points than the limit means a stride above 1: the spread ones are distinct.
    return [points[i] for i in sorted(chosen)]


def trial_report(number: int, objective: Objective,
                 validations: Sequence[Mapping[str, float]], best_step: int) -> dict[str, Any]:
    """TerminationSummary.trial: {number, value, bestEpoch, curve}. The best epoch is the one
    the loop selected (its step), so value is what the model it kept scored."""
    points = curve(validations, objective)
    best = next((k for k, v in enumerate(validations, start=1) if v.get("step") == best_step),
                0)  # 0: nothing selected (every value was NaN)
    value = points[best - 1][1] if best else math.nan
    return {"number": number, "value": _round(value), "bestEpoch": best,
            "curve": [[k, _round(v)] for k, v in thin(points, best)]}


def _round(value: float) -> float | None:
    """A JSON-safe number for the termination message (null for NaN/inf)."""
    return round(value, 6) if math.isfinite(value) else None
