"""The operator process's shared objects, created once at start-up (see main.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tailor.driftmonitors import DriftMonitorController
from tailor.settings import OperatorSettings
from tailor.trainingjobs import TrainingJobController


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
