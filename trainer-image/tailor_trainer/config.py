"""What the operator hands the trainer, read once from the environment.

The TrainingJob arrives as JSON in TAILOR_TRAININGJOB and is parsed with the contract's
pydantic models (tailor_contract.trainingjob, the operator's own), so the trainer sees exactly
the defaulted spec the API server stored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from tailor_contract import trainer_api, uris
from tailor_contract.trainingjob import TrainingJobSpec

from tailor_trainer.errors import REASON_INVALID_SPEC, PermanentError
from tailor_trainer.objective import Trial, parse_trial
from tailor_trainer.search import parse_search

ENV_TERMINATION_LOG = "TAILOR_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
ENV_WORK_DIR = "TAILOR_WORK_DIR"
"""Local scratch space (downloads, checkpoints before upload); defaults to the temp dir."""


@dataclass(frozen=True)
class RunConfig:
    """The parsed TrainingJob plus the run's identity and locations."""

    name: str
    namespace: str
    uid: str
    spec: TrainingJobSpec
    run_id: str
    artifact_uri: str
    model_uri: str
    model_name: str
    metrics_port: int
    group_restarts: int
    termination_log: str
    trial: Trial | None = None
    """Trial mode (TAILOR_TRIAL): train on train/validation only, report the objective."""
    search: dict[str, Any] | None = None
    """The final run of a tuned job (TAILOR_SEARCH): the finished search, to document."""

    @property
    def checkpoint_uri(self) -> str:
        return uris.join(self.artifact_uri, trainer_api.ARTIFACT_CHECKPOINTS_DIR) + "/"


def _require(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise PermanentError(REASON_INVALID_SPEC, f"environment variable {name} is not set; the "
                             "operator sets it in every worker pod")
    return value


def load_config(env: Mapping[str, str] | None = None) -> RunConfig:
    """Read and validate the run's configuration; a bad one is a permanent failure."""
    env = os.environ if env is None else env
    raw = _require(env, trainer_api.ENV_TRAININGJOB)
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise PermanentError(REASON_INVALID_SPEC,
                             f"{trainer_api.ENV_TRAININGJOB} is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("spec"), dict):
        raise PermanentError(REASON_INVALID_SPEC,
                             f"{trainer_api.ENV_TRAININGJOB} must be a TrainingJob object "
                             "with a spec")
    try:
        spec = TrainingJobSpec.model_validate(obj["spec"])
    except ValidationError as exc:
        problems = "; ".join(
            f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise PermanentError(REASON_INVALID_SPEC, f"invalid TrainingJob spec: {problems}") from exc
    custom = spec.task == "custom"
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name") or "trainingjob")
    port_text = env.get(trainer_api.ENV_METRICS_PORT, str(trainer_api.METRICS_PORT))
    restarts_text = env.get(trainer_api.ENV_RESTART_COUNT, "0")
    try:
        port = int(port_text)
        restarts = int(restarts_text)
    except ValueError as exc:
        raise PermanentError(REASON_INVALID_SPEC,
                             f"bad numeric environment variable: {exc}") from exc
    return RunConfig(
        name=name,
        namespace=str(metadata.get("namespace") or "default"),
        uid=str(metadata.get("uid") or ""),
        spec=spec,
        run_id=_require(env, trainer_api.ENV_RUN_ID),
        # A custom task may have no output; the built-in recipes always need both locations.
        artifact_uri=(env.get(trainer_api.ENV_ARTIFACT_URI, "") if custom
                      else _require(env, trainer_api.ENV_ARTIFACT_URI)),
        model_uri=(env.get(trainer_api.ENV_MODEL_URI, "") if custom
                   else _require(env, trainer_api.ENV_MODEL_URI)),
        model_name=spec.model_name(name),
        metrics_port=port,
        group_restarts=restarts,
        termination_log=env.get(ENV_TERMINATION_LOG, DEFAULT_TERMINATION_LOG),
        trial=parse_trial(trial) if (trial := env.get(trainer_api.ENV_TRIAL, "").strip())
        else None,
        search=parse_search(search) if (search := env.get(trainer_api.ENV_SEARCH, "").strip())
        else None,
    )
