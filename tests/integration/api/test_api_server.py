"""The CRDs on a real API server: examples accepted, bad input refused with a useful message,
kubectl explain / get / categories, and generation vs. the status subresource."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from manifests import EXAMPLES, INVALID, crd_schema, documents, expectation
from pydantic import BaseModel, ValidationError
from tailor_contract import DriftMonitorSpec, TrainingJobSpec

from tests.support.testing import StackHandle

pytestmark = pytest.mark.usefixtures("crds")

MODELS: dict[str, type[BaseModel]] = {
    "TrainingJob": TrainingJobSpec,
    "DriftMonitor": DriftMonitorSpec,
}


def _apply(stack: StackHandle, namespace: str, doc: dict[str, Any], check: bool = True) -> Any:
    return stack.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=check
    )


def _get(stack: StackHandle, namespace: str, kind: str, name: str) -> dict[str, Any]:
    out = stack.kubectl("get", kind.lower(), name, "-n", namespace, "-o", "json").stdout
    obj: dict[str, Any] = json.loads(out)
    return obj


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_and_defaulted_like_the_models(
    stack: StackHandle, namespace: str, path: Path
) -> None:
    [doc] = documents(path)
    stack.kubectl("apply", "-n", namespace, "-f", str(path))
    stored = _get(stack, namespace, doc["kind"], doc["metadata"]["name"])
    # The server's defaulting and the typed models agree on the complete spec.
    expected = (
        MODELS[doc["kind"]]
        .model_validate(doc["spec"])
        .model_dump(by_alias=True, exclude_none=True, mode="json")
    )
    assert stored["spec"] == expected
    assert stored["metadata"]["generation"] == 1


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_manifest_is_refused_naming_the_field(
    stack: StackHandle, namespace: str, path: Path
) -> None:
    docs = documents(path)
    expect = expectation(path)
    *setup, bad = docs
    for doc in setup:  # an update case: create the valid object first
        _apply(stack, namespace, doc)
    result = _apply(stack, namespace, bad, check=False)
    assert result.returncode != 0, f"{path.name} was accepted:\n{result.stdout}"
    assert expect in result.stderr, f"{path.name}: {expect!r} not in:\n{result.stderr}"
    name, kind = bad["metadata"]["name"], bad["kind"]
    if setup:  # refused updates leave the object as it was
        stored = _get(stack, namespace, kind, name)
        assert stored["metadata"]["generation"] == 1
        before = MODELS[kind].model_validate(setup[0]["spec"])
        assert stored["spec"] == before.model_dump(by_alias=True, exclude_none=True, mode="json")
    else:
        missing = stack.kubectl("get", kind.lower(), name, "-n", namespace, check=False)
        assert missing.returncode != 0 and "NotFound" in missing.stderr


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("resource", "kind", "path"),
    [
        ("trainingjob.spec.data", "TrainingJob", ["spec", "data"]),
        ("driftmonitor.spec", "DriftMonitor", ["spec"]),
        ("tj.spec.runPolicy", "TrainingJob", ["spec", "runPolicy"]),
        ("tj.spec.tuning", "TrainingJob", ["spec", "tuning"]),
        ("tj.status.tuning", "TrainingJob", ["status", "tuning"]),
    ],
)
def test_kubectl_explain_teaches_the_fields(
    stack: StackHandle, resource: str, kind: str, path: list[str]
) -> None:
    node = crd_schema(kind)
    for part in path:
        node = node["properties"][part]
    explained = _flat(stack.kubectl("explain", resource).stdout)
    assert _flat(node["description"]) in explained
    for field, child in node["properties"].items():
        assert field in explained
        assert _flat(child["description"]) in explained, f"{resource}.{field}"


SMOKE = {
    "apiVersion": "tailor.dev/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "columns"},
    "spec": {
        "task": "custom",
        "workers": 2,
        "command": ["true"],
        "runPolicy": {"suspend": True},
    },
}
MONITOR = {
    "apiVersion": "tailor.dev/v1alpha1",
    "kind": "DriftMonitor",
    "metadata": {"name": "columns"},
    "spec": {
        "model": {"trainingJob": "columns"},
        "production": {"predictionsUri": "s3://logs/predictions/"},
        "retrain": {"enabled": False},
    },
}
NOW = "2026-01-02T03:04:05Z"


def _condition(type_: str, status: str, reason: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": f"{type_} is {status}",
        "lastTransitionTime": NOW,
        "observedGeneration": 1,
    }


def _patch_status(stack: StackHandle, namespace: str, kind: str, status: dict[str, Any]) -> None:
    stack.kubectl(
        "patch",
        kind,
        "columns",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def _table(text: str) -> list[list[str]]:
    """Rows of `kubectl get` output, split on runs of two or more spaces."""
    import re

    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines() if line.strip()]


def test_kubectl_get_prints_the_columns(stack: StackHandle, namespace: str) -> None:
    _apply(stack, namespace, SMOKE)
    _apply(stack, namespace, MONITOR)
    _patch_status(
        stack,
        namespace,
        "trainingjob",
        {
            "observedGeneration": 1,
            "phase": "Running",
            "workers": {"desired": 2, "ready": 1, "restarts": 0, "summary": "1/2"},
            "progress": {"step": 420, "totalSteps": 1000, "percent": 42.0, "summary": "42%"},
            "tuning": {"state": "Searching", "summary": "5/12 trials, best 0.912"},
            "metrics": {"metric": "accuracy", "test": 0.91},
            "promotion": {"verdict": "Promoted"},
            "conditions": [_condition("Running", "True", "WorkersRunning")],
        },
    )
    _patch_status(
        stack,
        namespace,
        "driftmonitor",
        {
            "observedGeneration": 1,
            "lastCheckTime": NOW,
            "accuracy": {"metric": "accuracy", "value": 0.87},
            "retrainCount": 2,
            "conditions": [_condition("DriftDetected", "True", "FeatureDrift")],
        },
    )
    rows = _table(stack.kubectl("get", "tj,dm", "-n", namespace).stdout)
    header_tj = ["NAME", "PHASE", "WORKERS", "PROGRESS", "TRIALS", "METRIC", "PROMOTED", "AGE"]
    header_dm = ["NAME", "MODEL", "ACCURACY", "DRIFT", "RETRAINS", "LAST CHECK", "AGE"]
    assert rows[0] == header_tj
    assert rows[1][:7] == [
        "trainingjob.tailor.dev/columns",
        "Running",
        "1/2",
        "42%",
        "5/12 trials, best 0.912",
        "0.91",
        "Promoted",
    ]
    assert rows[2] == header_dm
    assert rows[3][:5] == ["driftmonitor.tailor.dev/columns", "columns", "0.87", "True", "2"]
    wide = _table(stack.kubectl("get", "tj", "-n", namespace, "-o", "wide").stdout)
    assert wide[0][-2:] == ["TASK", "RESTARTS"]
    assert wide[1][-2:] == ["custom", "0"]


def test_kubectl_get_tailor_lists_both_kinds(stack: StackHandle, namespace: str) -> None:
    _apply(stack, namespace, SMOKE)
    _apply(stack, namespace, MONITOR)
    out = stack.kubectl("get", "tailor", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(out) == ["driftmonitor.tailor.dev/columns", "trainingjob.tailor.dev/columns"]


def test_spec_changes_bump_generation_and_status_updates_do_not(
    stack: StackHandle, namespace: str
) -> None:
    _apply(stack, namespace, SMOKE)
    assert _get(stack, namespace, "TrainingJob", "columns")["metadata"]["generation"] == 1

    # The mutable parts of a spec: run policy (suspend included), scheduling, promotion.
    stack.kubectl(
        "patch",
        "tj",
        "columns",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps(
            {
                "spec": {
                    "runPolicy": {"suspend": False, "backoffLimit": 5, "activeDeadlineSeconds": 60},
                    "scheduling": {"queueName": "team-a", "priorityClassName": "low"},
                    "promotion": {"policy": "Manual"},
                }
            }
        ),
    )
    changed = _get(stack, namespace, "TrainingJob", "columns")
    assert changed["metadata"]["generation"] == 2
    assert changed["spec"]["runPolicy"] == {
        "suspend": False,
        "backoffLimit": 5,
        "activeDeadlineSeconds": 60,
        "pendingDeadlineSeconds": 600,  # the schema's default
    }

    _patch_status(
        stack,
        namespace,
        "trainingjob",
        {
            "observedGeneration": 2,
            "phase": "Pending",
            "conditions": [_condition("Running", "Unknown", "Pending")],
        },
    )
    after_status = _get(stack, namespace, "TrainingJob", "columns")
    assert after_status["metadata"]["generation"] == 2
    assert after_status["status"]["phase"] == "Pending"
    assert after_status["status"]["conditions"][0]["reason"] == "Pending"

    # Status written through the main resource is ignored, and does not bump generation either.
    stack.kubectl(
        "patch",
        "tj",
        "columns",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Failed"}}),
    )
    ignored = _get(stack, namespace, "TrainingJob", "columns")
    assert ignored["metadata"]["generation"] == 2
    assert ignored["status"]["phase"] == "Pending"


def test_status_is_validated_too(stack: StackHandle, namespace: str) -> None:
    _apply(stack, namespace, SMOKE)
    bad = stack.kubectl(
        "patch",
        "tj",
        "columns",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"conditions": [{"type": "Running", "status": "Maybe"}]}}),
        check=False,
    )
    assert bad.returncode != 0
    assert "status.conditions[0].status" in bad.stderr


TUNED = {
    "task": "text-classification",
    "model": {"name": "news", "base": "s3://models/minilm/"},
    "data": {"uri": "s3://data/news.csv", "columns": {"text": "text"}},
    "output": {"uri": "s3://models/out"},
}
ALL_TEN = {
    "learningRate": {"values": [1e-5, 1e-4]},
    "batchSize": {"values": [16, 32]},
    "epochs": {"min": 2, "max": 3},
    "maxSteps": {"min": 100, "max": 300, "step": 100},
    "gradientAccumulationSteps": {"values": [1]},
    "warmupRatio": {"min": 0.0, "max": 0.1, "step": 0.1},
    "weightDecay": {"values": [0.0]},
    "maxSequenceLength": {"min": 128, "max": 256, "step": 128},
    "imageSize": {"values": [224]},
    "earlyStoppingPatience": {"min": 1, "max": 2},
}  # 2 * 2 * 2 * 3 * 1 * 2 * 1 * 2 * 1 * 2 = 192 points


@pytest.mark.parametrize(
    ("space", "max_trials", "accepted"),
    [
        ({"warmupRatio": {"min": 0.0, "max": 0.3, "step": 0.1}}, 4, True),  # 0.3 / 0.1 < 3: 4 points
        ({"warmupRatio": {"min": 0.0, "max": 0.3, "step": 0.1}}, 3, False),
        ({"weightDecay": {"min": 0.0, "max": 0.5, "step": 0.1}}, 6, True),
        ({"weightDecay": {"min": 0.0, "max": 0.5, "step": 0.1}}, 5, False),
        ({"learningRate": {"min": 1e-5, "max": 1e-4, "step": 1e-5}}, 10, True),
        ({"learningRate": {"min": 1e-5, "max": 1e-4, "step": 1e-5}}, 9, False),
        ({"epochs": {"min": 2, "max": 6}, "batchSize": {"values": [16, 32, 64]}}, 15, True),
        ({"epochs": {"min": 2, "max": 6}, "batchSize": {"values": [16, 32, 64]}}, 14, False),
        ({"maxSteps": {"min": 100, "max": 100000000}}, 100, False),
        ({"warmupRatio": {"min": 0.0, "max": 0.5, "step": 1e-7}}, 100, False),  # far beyond the cap
        ({"learningRate": {"min": 1e-5, "max": 1e-3}}, 100, False),  # no finite grid
        (ALL_TEN, 100, False),
        ({**ALL_TEN, "batchSize": {"values": [16]}, "epochs": {"values": [2]}}, 48, True),
        ({**ALL_TEN, "batchSize": {"values": [16]}, "epochs": {"values": [2]}}, 47, False),
    ],
)
def test_the_server_and_the_model_agree_on_the_grid(
    stack: StackHandle, namespace: str, space: dict[str, Any], max_trials: int, accepted: bool
) -> None:
    """The CRD's grid-size rule is the model's arithmetic, floating-point tolerance included."""
    spec = {**TUNED, "tuning": {"algorithm": "grid", "maxTrials": max_trials, "searchSpace": space}}
    try:
        TrainingJobSpec.model_validate(spec)
        model_accepts = True
    except ValidationError:
        model_accepts = False
    assert model_accepts is accepted
    doc = {"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "grid"}, "spec": spec}
    result = _apply(stack, namespace, doc, check=False)
    assert (result.returncode == 0) == model_accepts, result.stderr


def test_status_tuning_holds_a_search(stack: StackHandle, namespace: str) -> None:
    """What the operator writes during a search is accepted as it is."""
    _apply(stack, namespace, SMOKE)
    trial = {
        "number": 0,
        "parameters": {"learningRate": 3e-4, "batchSize": 32},
        "state": "Pruned",
        "value": 0.71,
        "curve": [{"epoch": 1, "value": 0.71}],
        "attempts": 1,
        "reason": "Pruned",
        "message": "below the median of the other trials at epoch 1",
        "startTime": NOW,
        "completionTime": NOW,
    }
    tuning = {
        "state": "Searching",
        "summary": "1/12 trials",
        "trialsCompleted": 0,
        "trialsRunning": 1,
        "trialsPruned": 1,
        "trialsFailed": 0,
        "objective": {"metric": "accuracy", "direction": "maximize"},
        "bestTrial": {"number": 1, "parameters": {"learningRate": 1e-4}, "value": 0.9},
        "trials": [trial, {"number": 1, "parameters": {"learningRate": 1e-4}, "state": "Running",
                           "attempts": 2}],
    }
    _patch_status(stack, namespace, "trainingjob", {"phase": "Tuning", "tuning": tuning})
    assert _get(stack, namespace, "TrainingJob", "columns")["status"]["tuning"] == tuning
