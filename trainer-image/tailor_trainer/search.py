"""The final run of a tuned job: what the finished search tells its model card and MLflow run.

The operator runs the search (trials in trial mode, `tailor_trainer.objective`), then this run
with the best trial's parameters already merged into the spec, and hands it the search's outcome
in TAILOR_SEARCH (`trainer_api.ENV_SEARCH`). The run itself is an ordinary one: the gate over all
data, the locked test set, the baselines, the verdict. It only documents how its parameters were
chosen: a "Hyper-parameter search" section in the model card, `tuning.*` parameters on its MLflow
run, and the trials' MLflow runs adopted as its children (`Tracker.adopt`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from tailor_contract import trainer_api

from tailor_trainer.errors import REASON_INVALID_SPEC, PermanentError

NOT_TUNED_ON_TEST = ("The search read the training and validation splits only, so the test "
                     "score was not tuned on.")


def parse_search(text: str) -> dict[str, Any]:
    """TAILOR_SEARCH's JSON, checked for the parts the card and the params need."""
    name = trainer_api.ENV_SEARCH
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise PermanentError(REASON_INVALID_SPEC, f"{name} is not valid JSON: {exc}") from exc
    problems = []
    if not isinstance(data, dict):
        raise PermanentError(REASON_INVALID_SPEC, f"{name} must be a JSON object")
    if not isinstance(data.get("objective"), dict) or "metric" not in data["objective"]:
        problems.append("objective must be an object with a metric")
    if not isinstance(data.get("trials"), list):
        problems.append("trials must be a list")
    if not isinstance(data.get("best"), dict) or "number" not in data["best"]:
        problems.append("best must be an object with a number")
    if problems:
        raise PermanentError(REASON_INVALID_SPEC, f"bad {name}: " + "; ".join(problems))
    return dict(data)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)
                                  and abs(value) < 1e6):
        return str(int(value))
    return f"{value:.4g}"


def _parameters(params: Any) -> str:
    if not isinstance(params, Mapping) or not params:
        return "(the defaults)"
    return ", ".join(f"{k}={_number(v)}" for k, v in sorted(params.items()))


def _space_entry(entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return str(entry)
    if "values" in entry:
        return ", ".join(_number(v) for v in entry["values"])
    text = f"{_number(entry.get('min'))} .. {_number(entry.get('max'))}"
    extras = ["log scale"] if entry.get("scale") == "log" else []
    if entry.get("step") is not None:
        extras.append(f"step {_number(entry['step'])}")
    return f"{text} ({', '.join(extras)})" if extras else text


def _early_stopping(early: Any) -> str:
    if not isinstance(early, Mapping) or not early:
        return "none"
    return f"{early.get('algorithm', '?')}, never before epoch {early.get('minEpochs', 1)}"


def card_lines(search: Mapping[str, Any]) -> list[str]:
    """The model card's "Hyper-parameter search" section."""
    objective = search.get("objective") or {}
    trials = [t for t in search.get("trials") or [] if isinstance(t, Mapping)]
    best = search.get("best") or {}
    lines = ["", "## Hyper-parameter search", "",
             f"Objective: **{objective.get('metric')}** on the validation split "
             f"({objective.get('direction', 'maximize')}); algorithm `{search.get('algorithm')}`; "
             f"early stopping: {_early_stopping(search.get('earlyStopping'))}; "
             f"{len(trials)} trials of at most {search.get('maxTrials', len(trials))}.",
             "", NOT_TUNED_ON_TEST, "", "| hyper-parameter | search space |", "|---|---|"]
    space = search.get("searchSpace") or {}
    lines += [f"| {k} | {_space_entry(v)} |" for k, v in sorted(space.items())]
    lines += ["", "| trial | state | value | epochs | parameters |", "|---|---|---|---|---|"]
    for t in sorted(trials, key=lambda t: int(t.get("number", 0))):
        mark = " (best)" if t.get("number") == best.get("number") else ""
        lines.append(f"| {t.get('number')}{mark} | {t.get('state', '')} | "
                     f"{_value(t.get('value'))} | {_number(t.get('epochs'))} | "
                     f"{_parameters(t.get('parameters'))} |")
    lines += ["", f"**Best: trial {best.get('number')}**, {objective.get('metric')} "
              f"{_value(best.get('value'))} on the validation split, with "
              f"{_parameters(best.get('parameters'))}. This run was trained afresh with those "
              "parameters, on the same split, and judged as any run is."]
    return lines


def _value(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.4f}"
    return ""


def mlflow_params(search: Mapping[str, Any]) -> dict[str, Any]:
    """The search as the final run's `tuning.*` MLflow parameters."""
    objective = search.get("objective") or {}
    best = search.get("best") or {}
    early = search.get("earlyStopping")
    params: dict[str, Any] = {
        "tuning.metric": objective.get("metric"),
        "tuning.direction": objective.get("direction"),
        "tuning.algorithm": search.get("algorithm"),
        "tuning.earlyStopping": early.get("algorithm") if isinstance(early, Mapping) else "none",
        "tuning.maxTrials": search.get("maxTrials"),
        "tuning.trials": len(search.get("trials") or []),
        "tuning.bestTrial": best.get("number"),
        "tuning.bestValue": best.get("value"),
    }
    for key, value in (best.get("parameters") or {}).items():
        params[f"tuning.best.{key}"] = value
    return {k: v for k, v in params.items() if v is not None}
