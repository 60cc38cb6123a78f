"""The operator process's shared objects, created once at start-up (see main.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tailor.controllers.driftmonitor import DriftMonitorController
from tailor.controllers.trainingjob import TrainingJobController
from tailor.settings import OperatorSettings


@dataclass(frozen=True)
class Runtime:
    settings: OperatorSettings
    trainingjobs: TrainingJobController
    driftmonitors: DriftMonitorController


_runtime: Runtime | None = None


def configure(runtime: Runtime) -> None:
    global _runtime
    _runtime = runtime


def current() -> Runtime:
    if _runtime is None:
        raise RuntimeError("the operator is not configured; start it with `python -m tailor`")
    return _runtime


def controller() -> TrainingJobController:
    return current().trainingjobs
