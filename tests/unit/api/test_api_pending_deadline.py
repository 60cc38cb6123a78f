"""spec.runPolicy.pendingDeadlineSeconds: its default, its off switch, and bad values refused by
the CRD's schema and by the typed model alike, each naming the field."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from apischema import apply_defaults, spec_schema
from pydantic import ValidationError
from tailor_contract.trainingjob import DEFAULT_PENDING_DEADLINE_SECONDS, TrainingJobSpec

CUSTOM: dict[str, Any] = {"task": "custom", "command": ["python", "-c", "print(1)"]}


def with_deadline(value: Any) -> dict[str, Any]:
    return {**CUSTOM, "runPolicy": {"pendingDeadlineSeconds": value}}


def test_absent_is_ten_minutes_in_the_schema_and_the_model() -> None:
    assert DEFAULT_PENDING_DEADLINE_SECONDS == 600
    assert apply_defaults(CUSTOM, spec_schema("TrainingJob"))["runPolicy"][
        "pendingDeadlineSeconds"] == 600
    assert TrainingJobSpec.model_validate(CUSTOM).run_policy.pending_deadline_seconds == 600
    # A null (Helm renders an empty value so) is pruned, then defaulted, on both sides.
    assert TrainingJobSpec.model_validate(with_deadline(None)).run_policy \
        .pending_deadline_seconds == 600


@pytest.mark.parametrize("value", [0, 1, 600, 86400])
def test_zero_turns_it_off_and_any_whole_number_up_to_a_day_is_accepted(value: int) -> None:
    jsonschema.Draft4Validator(spec_schema("TrainingJob")).validate(with_deadline(value))
    parsed = TrainingJobSpec.model_validate(with_deadline(value))
    assert parsed.run_policy.pending_deadline_seconds == value
    assert parsed.run_policy.to_api()["pendingDeadlineSeconds"] == value


@pytest.mark.parametrize(("value", "schema_says", "model_says"), [
    (-1, "is less than the minimum of 0", "greater than or equal to 0"),
    (86401, "is greater than the maximum of 86400", "less than or equal to 86400"),
    ("10m", "is not of type 'integer'", "valid integer"),
    (1.5, "is not of type 'integer'", "valid integer"),
    (True, "is not of type 'integer'", "valid integer"),
])
def test_bad_values_are_refused_naming_the_field(value: Any, schema_says: str,
                                                 model_says: str) -> None:
    errors = list(jsonschema.Draft4Validator(spec_schema("TrainingJob")).iter_errors(
        with_deadline(value)))
    assert [".".join(map(str, e.path)) for e in errors] == ["runPolicy.pendingDeadlineSeconds"]
    assert schema_says in errors[0].message
    with pytest.raises(ValidationError) as refused:
        TrainingJobSpec.model_validate(with_deadline(value))
    [error] = refused.value.errors()
    assert error["loc"] == ("runPolicy", "pendingDeadlineSeconds")
    assert model_says in error["msg"]


def test_it_stays_mutable_like_the_rest_of_run_policy() -> None:
    """No transition rule: a stalled job's deadline can be raised (or turned off) in place."""
    run_policy = spec_schema("TrainingJob")["properties"]["runPolicy"]
    node = run_policy["properties"]["pendingDeadlineSeconds"]
    assert "x-kubernetes-validations" not in node and "x-kubernetes-validations" not in run_policy
