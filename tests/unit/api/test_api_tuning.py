"""spec.tuning: the CRD's hand-written rules agree with tailor_contract.tuning, and the model's
helpers (direction, grid, merged parameters) behave."""

from __future__ import annotations

from typing import Any

import pytest
import tuningrules
from apischema import root_schema, spec_schema
from pydantic import ValidationError
from tailor_contract import TrainingJobSpec
from tailor_contract import constants as c
from tailor_contract.trainingjob import TUNING_NEEDS_BUILT_IN_TASK
from tailor_contract.tuning import (
    DIRECTION_MISMATCH,
    ENTRY_RULES,
    FAILED_ABOVE_MAX,
    GRID_NEEDS_STEPS,
    GRID_TOO_LARGE,
    MAX_VALUES,
    PARALLEL_ABOVE_MAX,
    TUNABLE,
    TUNABLE_NAMES,
    Hyperparameters,
    Range,
    Tuning,
)

TEXT: dict[str, Any] = {
    "task": "text-classification",
    "model": {"base": "s3://models/minilm/"},
    "data": {"uri": "s3://data/news.csv", "columns": {"text": "body"}},
    "output": {"uri": "s3://models/out"},
}
LR = {"min": 1e-5, "max": 1e-3, "scale": "log"}


def _tuning_schema() -> dict[str, Any]:
    schema: dict[str, Any] = spec_schema("TrainingJob")["properties"]["tuning"]
    return schema


def _flat(text: str) -> str:
    return " ".join(text.split())


def _rules(node: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {key: _flat(value) for key, value in rule.items()}
        for rule in node.get("x-kubernetes-validations", [])
    ]


# --- The CRD and the Python source say the same -------------------------------------------------


def test_per_name_rules_are_generated_from_the_hyperparameters_bounds() -> None:
    """Names, bounds and integer-ness in the CRD's searchSpace rules come from TUNABLE."""
    search_space = _tuning_schema()["properties"]["searchSpace"]
    assert _rules(search_space) == tuningrules.search_space_rules(), (
        "crds/trainingjobs.yaml spec.tuning.searchSpace rules differ from tailor_contract.tuning: "
        "paste the output of python tests/unit/api/tuningrules.py into the CRD"
    )
    grid = [rule for rule in _rules(_tuning_schema()) if "'grid'" in rule["rule"]]
    assert grid == tuningrules.grid_rules()


def test_tunable_names_types_and_bounds_match_the_crd_hyperparameters() -> None:
    hyperparameters = spec_schema("TrainingJob")["properties"]["hyperparameters"]["properties"]
    assert set(TUNABLE_NAMES) <= set(hyperparameters)
    assert {"seed", "precision"}.isdisjoint(TUNABLE_NAMES)
    for name, tunable in TUNABLE.items():
        node = hyperparameters[name]
        assert tunable.integer == (node["type"] == "integer"), name
        assert tunable.minimum == node["minimum"], name
        assert tunable.exclusive_minimum == bool(node.get("exclusiveMinimum")), name
        assert tunable.maximum == node["maximum"], name
    assert TUNABLE["learningRate"].exclusive_minimum and not TUNABLE["learningRate"].integer
    assert TUNABLE["batchSize"].integer and TUNABLE["maxSteps"].integer


def test_every_other_rule_says_what_the_model_says() -> None:
    tuning = _tuning_schema()
    entry = tuning["properties"]["searchSpace"]["additionalProperties"]
    assert [r["message"] for r in _rules(entry)] == list(ENTRY_RULES)
    messages = {r["message"] for r in _rules(tuning)}
    assert {PARALLEL_ABOVE_MAX, FAILED_ABOVE_MAX, GRID_NEEDS_STEPS, GRID_TOO_LARGE} <= messages
    objective = tuning["properties"]["objective"]
    assert [r["message"] for r in _rules(objective)] == [DIRECTION_MISMATCH]
    assert TUNING_NEEDS_BUILT_IN_TASK in {r["message"] for r in _rules(spec_schema("TrainingJob"))}


def test_limits_and_states_match_the_constants() -> None:
    props = _tuning_schema()["properties"]
    for field in ("maxTrials", "parallelTrials", "maxFailedTrials"):
        assert props[field]["maximum"] == c.MAX_TRIALS, field
    assert props["searchSpace"]["maxProperties"] == len(TUNABLE_NAMES)
    assert props["searchSpace"]["additionalProperties"]["properties"]["values"]["maxItems"] == (
        MAX_VALUES
    )
    status = root_schema("TrainingJob")["properties"]["status"]["properties"]["tuning"]
    assert status["properties"]["state"]["enum"] == [
        c.SEARCH_SEARCHING,
        c.SEARCH_COMPLETED,
        c.SEARCH_FAILED,
    ]
    trials = status["properties"]["trials"]
    assert trials["maxItems"] == c.MAX_TRIALS
    assert tuple(trials["items"]["properties"]["state"]["enum"]) == c.TRIAL_STATES
    assert trials["items"]["properties"]["parameters"]["maxProperties"] == len(TUNABLE_NAMES)
    assert "Tuning" in c.TRAININGJOB_PHASES


# --- Refusals the invalid corpus does not spell out ---------------------------------------------


def _tuned(**tuning: Any) -> dict[str, Any]:
    return {**TEXT, "tuning": tuning}


@pytest.mark.parametrize(
    ("tuning", "message"),
    [
        ({"searchSpace": {"learningRate": {"values": [0.0, 1e-4]}}}, "learningRate's own range"),
        ({"searchSpace": {"epochs": {"min": 1, "max": 9, "step": 2.5}}}, "needs whole numbers"),
        ({"searchSpace": {"epochs": {"values": [2, 3.5]}}}, "epochs needs whole numbers"),
        ({"searchSpace": {"batchSize": {"max": 64}}}, ENTRY_RULES[0]),
        ({"searchSpace": {"batchSize": {"values": [16, 16]}}}, "values must be unique"),
        ({"searchSpace": {"batchSize": {"values": [True, 2]}}}, "valid number"),
        ({"searchSpace": {"lr": LR}}, "tuning.searchSpace.lr cannot be tuned; the tunable "
                                      "hyper-parameters are learningRate, batchSize, epochs"),
        ({"searchSpace": {"learningRate": LR}, "seed": -1}, "seed"),
        ({"searchSpace": {"learningRate": LR}, "objective": {"metric": "accuracy",
                                                             "direction": "minimize"}},
         DIRECTION_MISMATCH),
        ({"algorithm": "grid", "maxTrials": 3,
          "searchSpace": {"warmupRatio": {"min": 0.0, "max": 0.3, "step": 0.1}}}, GRID_TOO_LARGE),
        ({"algorithm": "grid", "searchSpace": {"warmupRatio": {"min": 0.0, "max": 0.3}}},
         GRID_NEEDS_STEPS),
    ],
)
def test_refused(tuning: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match="tuning") as refused:
        TrainingJobSpec.model_validate(_tuned(**tuning))
    assert message in str(refused.value)


@pytest.mark.parametrize(
    "tuning",
    [
        # 0..0.3 by 0.1 is four points although 0.3 / 0.1 < 3 in floating point.
        {"algorithm": "grid", "maxTrials": 4,
         "searchSpace": {"warmupRatio": {"min": 0.0, "max": 0.3, "step": 0.1}}},
        # An integer range needs no step for a grid: 2..6 is five points; 3 * 5 = 15.
        {"algorithm": "grid", "maxTrials": 15, "searchSpace": {
            "epochs": {"min": 2, "max": 6}, "batchSize": {"values": [16, 32, 64]}}},
        {"searchSpace": {"learningRate": {"values": [1.0, 1e-5]}}},
        {"searchSpace": {"epochs": {"min": 1, "max": 9, "step": 2}, "maxSteps": {"values": [100]}}},
        {"searchSpace": {"weightDecay": {"min": 0.0, "max": 0.1}}, "maxFailedTrials": 0},
        {"searchSpace": {"learningRate": LR}, "objective": {"metric": "loss"}},
        {"searchSpace": {"learningRate": LR}, "maxTrials": 100, "parallelTrials": 100},
    ],
)
def test_accepted(tuning: dict[str, Any]) -> None:
    assert TrainingJobSpec.model_validate(_tuned(**tuning)).tuning is not None


# --- Helpers the operator uses ------------------------------------------------------------------


def _tuning(**fields: Any) -> Tuning:
    return Tuning.model_validate({"searchSpace": {"learningRate": LR}, **fields})


def test_defaults_and_direction() -> None:
    tuning = _tuning()
    assert (tuning.algorithm, tuning.max_trials, tuning.parallel_trials) == ("tpe", 12, 1)
    assert tuning.max_failed_trials is None and tuning.early_stopping is None
    assert (tuning.metric, tuning.direction) == ("accuracy", "maximize")
    assert _tuning(objective={"metric": "loss"}).direction == "minimize"
    assert _tuning(objective={"metric": "macro-f1", "direction": "maximize"}).direction == (
        "maximize"
    )
    stopping = _tuning(earlyStopping={"algorithm": "median"}).early_stopping
    assert stopping is not None and stopping.min_epochs == 1


def test_grid_values_and_size() -> None:
    assert Range(min=0.0, max=0.3, step=0.1).grid_values() == [0.0, 0.1, 0.2, 0.3]
    assert Range(min=0.0, max=0.2, step=0.05).grid_values() == [0.0, 0.05, 0.1, 0.15, 0.2]
    assert Range(min=2, max=6).grid_values(integer=True) == [2, 3, 4, 5, 6]
    assert Range(min=8, max=64, step=16).grid_values(integer=True) == [8, 24, 40, 56]
    values = Range(values=[16, 32]).grid_values(integer=True)
    assert values == [16, 32] and all(isinstance(v, int) for v in values)
    assert Range(min=1e-5, max=1e-3).size() is None
    with pytest.raises(ValueError, match="no grid"):
        Range(min=1e-5, max=1e-3).grid_values()
    space = {"epochs": {"min": 2, "max": 6}, "batchSize": {"values": [16, 32, 64]},
             "warmupRatio": {"min": 0.0, "max": 0.3, "step": 0.1}}
    assert _tuning(searchSpace=space).grid_size() == 5 * 3 * 4
    assert _tuning().grid_size() is None  # a float range without a step
    assert _tuning(algorithm="grid", maxTrials=60, searchSpace=space).grid_size() == 60


def test_integer_names() -> None:
    assert Tuning.is_integer("batchSize") and Tuning.is_integer("epochs")
    assert not Tuning.is_integer("learningRate") and not Tuning.is_integer("warmupRatio")


def test_merged_applies_the_parameters_to_api_cased_hyperparameters() -> None:
    defaults = Hyperparameters().to_api()
    merged = Tuning.merged(defaults, {"learningRate": 3e-4, "batchSize": 64.0, "epochs": 5})
    assert merged == {**defaults, "learningRate": 3e-4, "batchSize": 64, "epochs": 5}
    assert isinstance(merged["batchSize"], int)
    assert defaults["batchSize"] == 32  # the input is not changed
    Hyperparameters.model_validate(merged)  # and the result is valid
    with pytest.raises(ValueError, match="seed cannot be tuned"):
        Tuning.merged(defaults, {"seed": 1})


def test_with_parameters_gives_the_trial_spec() -> None:
    spec = TrainingJobSpec.model_validate(
        _tuned(searchSpace={"learningRate": LR, "batchSize": {"values": [16, 64]}})
    )
    trial = spec.with_parameters({"learningRate": 2e-4, "batchSize": 64})
    assert trial.hyperparameters.learning_rate == 2e-4
    assert trial.hyperparameters.batch_size == 64
    assert trial.hyperparameters.epochs == spec.hyperparameters.epochs
    assert trial.tuning == spec.tuning and trial.data == spec.data
    assert spec.hyperparameters.batch_size == 32


def test_max_epochs() -> None:
    assert _tuning().max_epochs(7) == 7
    assert _tuning().max_epochs() == Hyperparameters().epochs
    assert _tuning(searchSpace={"epochs": {"min": 2, "max": 6}}).max_epochs(3) == 6
    assert _tuning(searchSpace={"epochs": {"values": [4, 2]}}).max_epochs(9) == 4


def test_tuning_is_optional_and_refused_for_a_custom_task() -> None:
    assert TrainingJobSpec.model_validate(TEXT).tuning is None
    custom = {"task": "custom", "command": ["true"], "tuning": {"searchSpace": {"learningRate": LR}}}
    with pytest.raises(ValidationError, match="tuning needs a built-in task"):
        TrainingJobSpec.model_validate(custom)
