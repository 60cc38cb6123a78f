"""The search of spec.tuning, replayed from what status.tuning persisted: Optuna asks and prunes.

Optuna's study lives in memory only, and only for one decision: every reconcile builds a fresh
in-memory study from status.tuning.trials (parameters, state, value, validation curve), asks it
for the next parameters or whether a running trial should stop, and forgets it. So an operator
restart loses nothing and repeats nothing: the persisted trials are the study. Each trial still
Pending or Running is replayed as RUNNING, which TPE's constant liar treats as a poor result
(parallel trials spread out instead of piling onto one point).

Determinism: the sampler's seed mixes spec.tuning.seed with the number of trials already asked,
so a replayed study asks exactly what the interrupted one would have, and consecutive asks do
not repeat one random draw.

Grid search enqueues the grid's points in a seeded order and lets the study ask them: Optuna's
GridSampler keeps which points it has visited in system attributes of its own trials, which a
replay from status cannot rebuild without its private layout.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState, create_trial
from tailor_contract import constants as c
from tailor_contract.tuning import Tuning

optuna.logging.set_verbosity(optuna.logging.WARNING)

Params = dict[str, int | float]
_STATES = {c.TRIAL_PENDING: TrialState.RUNNING, c.TRIAL_RUNNING: TrialState.RUNNING,
           c.TRIAL_COMPLETED: TrialState.COMPLETE, c.TRIAL_PRUNED: TrialState.PRUNED,
           c.TRIAL_FAILED: TrialState.FAIL}
MAX_REASKS = 32
"""Proposals of points already tried before the space counts as used up."""
MAX_STARTUP_TRIALS = 5
"""Median pruning waits for this many finished trials (fewer for a small search)."""


def distributions(tuning: Tuning) -> dict[str, BaseDistribution]:
    """Each searched hyper-parameter as an Optuna distribution: a list of values is
    categorical, an integer hyper-parameter's range an IntDistribution."""
    out: dict[str, BaseDistribution] = {}
    for name, entry in tuning.search_space.items():
        if entry.values is not None:
            out[name] = CategoricalDistribution(entry.grid_values(tuning.is_integer(name)))
        elif tuning.is_integer(name):
            assert entry.min is not None and entry.max is not None
            out[name] = IntDistribution(int(entry.min), int(entry.max), log=entry.scale == "log",
                                        step=int(entry.step or 1))
        else:
            assert entry.min is not None and entry.max is not None
            out[name] = FloatDistribution(entry.min, entry.max, log=entry.scale == "log",
                                          step=entry.step)
    return out


def _seed(tuning: Tuning, default_seed: int, asked: int) -> int:
    base = tuning.seed if tuning.seed is not None else default_seed
    return (base * 1_000_003 + asked) % 2**32


def _pruner(tuning: Tuning, epochs: int) -> optuna.pruners.BasePruner:
    stopping = tuning.early_stopping
    if stopping is None:
        return optuna.pruners.NopPruner()
    if stopping.algorithm == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=stopping.min_epochs,
                                              max_resource=max(stopping.min_epochs, epochs))
    return optuna.pruners.MedianPruner(
        n_startup_trials=max(1, min(MAX_STARTUP_TRIALS, tuning.max_trials // 4)),
        n_warmup_steps=stopping.min_epochs)  # steps are epochs, counted from 1


def _sampler(tuning: Tuning, seed: int) -> optuna.samplers.BaseSampler:
    if tuning.algorithm == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                          n_startup_trials=min(10, max(2, tuning.max_trials // 4)))
    return optuna.samplers.RandomSampler(seed=seed)  # grid: the points are enqueued


def _frozen(trial: dict[str, Any], dists: dict[str, BaseDistribution]) -> FrozenTrial:
    state = _STATES[trial["state"]]
    curve = {int(p["epoch"]): float(p["value"]) for p in trial.get("curve") or []}
    value = trial.get("value") if state == TrialState.COMPLETE else None
    return create_trial(params=dict(trial["parameters"]), distributions=dists, state=state,
                        value=value, intermediate_values=curve,
                        system_attrs=dict(trial.get("pruner") or {}))


class Search:
    """One decision's view of the search: the persisted trials replayed into a new study."""

    def __init__(self, tuning: Tuning, trials: list[dict[str, Any]], *, name: str,
                 default_seed: int, max_epochs: int) -> None:
        self.tuning = tuning
        self.dists = distributions(tuning)
        self.study = optuna.create_study(
            study_name=name, direction=tuning.direction,
            sampler=_sampler(tuning, _seed(tuning, default_seed, len(trials))),
            pruner=_pruner(tuning, max_epochs))
        for trial in sorted(trials, key=lambda t: int(t["number"])):
            self.study.add_trial(_frozen(trial, self.dists))
        self._grid = self._grid_order(default_seed) if tuning.algorithm == "grid" else None

    def _grid_order(self, default_seed: int) -> list[Params]:
        names = sorted(self.tuning.search_space)
        points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(
            *(self.tuning.search_space[n].grid_values(self.tuning.is_integer(n))
              for n in names))]
        random.Random(_seed(self.tuning, default_seed, 0)).shuffle(points)  # noqa: S311
        return points

    def capacity(self) -> int:
        """How many trials the search runs in all: maxTrials, or the whole grid if smaller."""
        if self._grid is None:
            return self.tuning.max_trials
        return min(self.tuning.max_trials, len(self._grid))

    def ask(self) -> Params | None:
        """The next trial's parameters (recorded in this study as running); None when the
        sampler keeps proposing points already tried (a small discrete space is used up).

        A point already tried is not tried again: the trial that tried it answers for the
        proposal at once (its value, or its end), and the sampler is asked again. Measured in
        bench/tuning_search.py: over 36 discrete points, TPE proposed a point again in about
        3 of 12 trials, each a wasted trial."""
        if self._grid is not None:
            seen = [t.params for t in self.study.trials]
            point = next(p for p in self._grid if p not in seen)
            self.study.enqueue_trial(point)
            return self._plain(self.study.ask(self.dists).params)
        tried = {_key(t.params): t for t in self.study.trials}
        for _ in range(MAX_REASKS):
            trial = self.study.ask(self.dists)
            params = self._plain(trial.params)
            earlier = tried.get(_key(params))
            if earlier is None:
                return params
            if earlier.state == TrialState.COMPLETE:
                self.study.tell(trial, earlier.value)
            else:
                self.study.tell(trial, state=TrialState.PRUNED
                                if earlier.state == TrialState.PRUNED else TrialState.FAIL)
        return None

    @staticmethod
    def _plain(params: dict[str, Any]) -> Params:
        """JSON-friendly numbers: ints stay ints, anything else (numpy scalars) a float."""
        return {k: v if isinstance(v, int) else float(v) for k, v in params.items()}

    def should_prune(self, number: int) -> tuple[bool, dict[str, Any]]:
        """Whether running trial `number`, with the curve it has reported, should stop; and
        what the pruner recorded about it on the way (Hyperband's successive halving keeps
        each rung's value in the trial's system attributes and compares later trials with
        them), to be persisted with the trial and replayed with it."""
        trial = next(t for t in self.study.trials if t.number == number)
        if trial.state != TrialState.RUNNING or not trial.intermediate_values:
            return False, dict(trial.system_attrs)
        # Trial(study, id) is how Optuna's own integrations resume a trial by its id.
        stop = optuna.trial.Trial(self.study, trial._trial_id).should_prune()
        recorded = self.study._storage.get_trial(trial._trial_id).system_attrs
        return stop, {k: v for k, v in recorded.items() if isinstance(v, int | float | str)}


def _key(params: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((k, float(v)) for k, v in params.items()))


def best_value(curve: list[dict[str, Any]], direction: str) -> float | None:
    """A trial's value: the best epoch's objective (the epoch its model selection keeps)."""
    values = [float(p["value"]) for p in curve]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)
