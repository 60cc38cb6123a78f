"""Kubernetes-style conditions, upserted purely (no I/O).

A condition's `lastTransitionTime` changes only when its status does, so an unchanged
reconcile produces an identical status and no patch is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tailor_contract import clock

Condition = dict[str, Any]


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event a decision asks the controller to emit."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def find(conditions: Sequence[Condition] | None, kind: str) -> Condition | None:
    return next((c for c in conditions or () if c.get("type") == kind), None)


def is_true(conditions: Sequence[Condition] | None, kind: str) -> bool:
    condition = find(conditions, kind)
    return condition is not None and condition.get("status") == "True"


def reason_of(conditions: Sequence[Condition] | None, kind: str) -> str | None:
    """The reason of condition `kind`, None if there is no such condition."""
    condition = find(conditions, kind)
    return None if condition is None else condition.get("reason")


def upsert(conditions: Sequence[Condition] | None, kind: str, status: bool | None, reason: str,
           message: str, generation: int | None, timestamp: str | None = None
           ) -> list[Condition]:
    """A copy of `conditions` with `kind` set; `status` None means Unknown."""
    value = "Unknown" if status is None else ("True" if status else "False")
    old = find(conditions, kind)
    since = old["lastTransitionTime"] if old is not None and old.get("status") == value \
        and old.get("lastTransitionTime") else (timestamp or clock.stamp())
    new: Condition = {"type": kind, "status": value, "reason": reason, "message": message,
                      "lastTransitionTime": since}
    if generation is not None:
        new["observedGeneration"] = generation
    result = [c for c in conditions or () if c.get("type") != kind]
    result.append(new)
    return sorted(result, key=lambda c: str(c["type"]))
