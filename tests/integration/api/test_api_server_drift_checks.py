"""The API server and the models agree on ``auto``'s threshold (a rate, at most 0.1), and the
status takes the effect size ``auto`` writes next to each test."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from tailor_contract import DriftMonitorSpec

from tests.support.testing import StackHandle

pytestmark = pytest.mark.usefixtures("crds")

MONITOR: dict[str, Any] = {
    "model": {"trainingJob": "news"},
    "production": {"predictionsUri": "s3://logs/predictions/"},
}


def _apply(stack: StackHandle, namespace: str, spec: dict[str, Any]) -> Any:
    doc = {"apiVersion": "tailor.dev/v1alpha1", "kind": "DriftMonitor",
           "metadata": {"name": "thresholds"}, "spec": spec}
    return stack.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc),
                         check=False)


@pytest.mark.parametrize(
    ("checks", "accepted"),
    [
        ({"featureDrift": {"threshold": 0.1}}, True),
        ({"featureDrift": {"threshold": 0.1000001}}, False),
        ({"featureDrift": {"threshold": 1}}, False),  # an integer, as CEL sees it too
        ({"featureDrift": {"method": "psi", "threshold": 0.25}}, True),
        ({"predictionDrift": {"method": "auto", "threshold": 0.005}}, True),
        ({"predictionDrift": {"threshold": 0.25}}, False),
        ({"predictionDrift": {"method": "chi-square", "threshold": 0.25}}, True),
    ],
)
def test_the_server_and_the_model_agree_on_auto_thresholds(
    stack: StackHandle, namespace: str, checks: dict[str, Any], accepted: bool
) -> None:
    spec = {**MONITOR, "checks": checks}
    try:
        DriftMonitorSpec.model_validate(spec)
        model_accepts = True
    except ValidationError:
        model_accepts = False
    assert model_accepts is accepted
    result = _apply(stack, namespace, spec)
    assert (result.returncode == 0) == accepted, result.stderr
    if not accepted:
        assert "threshold must be at most 0.1 with method auto" in result.stderr


def test_status_takes_the_effect_and_its_floor(stack: StackHandle, namespace: str) -> None:
    assert _apply(stack, namespace, MONITOR).returncode == 0
    status = {
        "features": [
            {"name": "x", "method": "ks", "score": 1e-9, "threshold": 0.0025, "effect": 0.04,
             "effectFloor": 0.1, "drifted": False},
            {"name": "city", "method": "psi", "score": 0.3, "threshold": 0.25, "drifted": True},
        ],
        "predictionDrift": {"method": "chi-square", "score": 0.2, "threshold": 0.005,
                            "effect": 0.01, "effectFloor": 0.1, "drifted": False},
    }
    stack.kubectl("patch", "driftmonitor", "thresholds", "-n", namespace, "--subresource=status",
                  "--type=merge", "-p", json.dumps({"status": status}))
    out = stack.kubectl("get", "driftmonitor", "thresholds", "-n", namespace, "-o", "json")
    stored = json.loads(out.stdout)["status"]
    assert stored["features"] == status["features"]  # nothing pruned
    assert stored["predictionDrift"] == status["predictionDrift"]
