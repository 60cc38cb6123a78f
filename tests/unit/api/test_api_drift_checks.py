"""Under method ``auto`` a drift check's ``threshold`` is a false-alarm rate: the models and the
CRD refuse one above 0.1 (such as a PSI threshold from the explicit methods) with one message.

The API server's side of the rule runs in tests/integration/api (invalid/dm-*-auto-*.yaml and
test_api_drift_checks.py there); here the CRD's rule is checked for the same bound and message.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from apischema import spec_schema
from pydantic import BaseModel, ValidationError
from tailor_contract import DriftMonitorSpec
from tailor_contract.driftmonitor import AUTO_MAX_RATE, FeatureDriftCheck, PredictionDriftCheck

MONITOR: dict[str, Any] = {
    "model": {"trainingJob": "news"},
    "production": {"predictionsUri": "s3://logs/predictions/"},
}
CHECKS: dict[str, type[BaseModel]] = {
    "featureDrift": FeatureDriftCheck,
    "predictionDrift": PredictionDriftCheck,
}


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize(
    ("fields", "accepted"),
    [
        ({}, True),
        ({"threshold": 0.005}, True),
        ({"threshold": 0.1}, True),
        ({"threshold": 0.1000001}, False),
        ({"threshold": 0.25}, False),
        ({"method": "auto", "threshold": 1}, False),
        ({"method": "psi", "threshold": 0.25}, True),
        ({"method": "chi-square", "threshold": 0.5}, True),
    ],
)
def test_auto_threshold_is_a_rate_at_most_0_1(
    check: str, fields: dict[str, Any], accepted: bool
) -> None:
    spec = {**MONITOR, "checks": {check: fields}}
    if accepted:
        DriftMonitorSpec.model_validate(spec)
        return
    with pytest.raises(ValidationError) as refused:
        DriftMonitorSpec.model_validate(spec)
    assert f"checks.{check}.threshold must be at most 0.1 with method auto" in str(refused.value)


def _rule(check: str) -> dict[str, str]:
    [rule] = spec_schema("DriftMonitor")["properties"]["checks"]["properties"][check][
        "x-kubernetes-validations"
    ]
    return rule


@pytest.mark.parametrize("check", list(CHECKS))
def test_the_crd_rule_is_the_models_rule(check: str) -> None:
    rule = _rule(check)
    assert re.findall(r"self\.threshold <= ([0-9.]+)", rule["rule"]) == [str(AUTO_MAX_RATE)]
    assert "self.method != 'auto'" in rule["rule"]
    with pytest.raises(ValidationError) as refused:
        CHECKS[check].model_validate({"threshold": 0.25})
    assert rule["message"] in str(refused.value)
