"""Reading a TrainingJob and its pods back through kubectl, as the operator tests do."""

from __future__ import annotations

import json
from typing import Any

from tailor_contract import constants as c

from tests.support.testing import StackHandle, eventually


def get(stack: StackHandle, namespace: str, kind: str, name: str) -> dict[str, Any]:
    """The object, or {} when there is none (yet, or any more)."""
    result = stack.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def status(stack: StackHandle, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = get(stack, namespace, "tj", name).get("status", {})
    return found


def condition(stack: StackHandle, namespace: str, name: str, kind: str) -> dict[str, Any]:
    return next((x for x in status(stack, namespace, name).get("conditions", [])
                 if x["type"] == kind), {})


def wait_condition(stack: StackHandle, namespace: str, name: str, kind: str,
                   value: str = "True", timeout: float = 180) -> dict[str, Any]:
    return eventually(lambda: condition(stack, namespace, name, kind).get("status") == value
                      and condition(stack, namespace, name, kind), timeout=timeout,
                      what=f"{name}'s {kind} to be {value}")


def pods_of(stack: StackHandle, namespace: str, name: str) -> list[dict[str, Any]]:
    """The job's worker pods (every attempt's that still exists)."""
    items: list[dict[str, Any]] = json.loads(stack.kubectl(
        "get", "pods", "-n", namespace, "-l", f"{c.LABEL_TRAININGJOB}={name}", "-o", "json"
    ).stdout)["items"]
    return items
