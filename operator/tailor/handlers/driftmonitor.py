"""Kopf's in-memory index of DriftMonitors: the check loop and the webhook read it.

Checks are periodic, not event-driven: the loop in main.py starts each monitor's check when
its interval has passed (or its spec changed), reading the monitor's latest state first.
"""

from __future__ import annotations

from typing import Any

import kopf
from tailor_contract.constants import DRIFTMONITOR_PLURAL, GROUP, VERSION


@kopf.index(GROUP, VERSION, DRIFTMONITOR_PLURAL)
def driftmonitor_index(namespace: str, name: str, body: kopf.Body, **_: Any
                       ) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, name): dict(body)}
