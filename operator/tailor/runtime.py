"""The operator process's shared objects, created once at start-up (see main.py)."""

from __future__ import annotations

from tailor.settings import OperatorSettings
from tailor.trainingjobs import TrainingJobController

_controller: TrainingJobController | None = None
_settings: OperatorSettings | None = None


def configure(settings: OperatorSettings, controller_: TrainingJobController) -> None:
    global _controller, _settings
    _settings, _controller = settings, controller_


def controller() -> TrainingJobController:
    if _controller is None:
        raise RuntimeError("the operator is not configured; start it with `python -m tailor`")
    return _controller


def settings() -> OperatorSettings:
    if _settings is None:
        raise RuntimeError("the operator is not configured; start it with `python -m tailor`")
    return _settings
