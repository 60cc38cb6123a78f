"""task: custom — the user's command under the same torchrun wiring.

Each torchrun process replaces itself with spec.command + spec.args (exec, so signals and the
exit code are the user's own: exit 42 for bad input, 75 to ask for a restart). The command
inherits RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from torchrun, everything
the operator set, and:

    TAILOR_CHECKPOINT_URI   <artifact uri>/checkpoints/ (resume from the newest step there)
    TAILOR_WORK_DIR         local scratch space
    TAILOR_HYPERPARAMETERS  spec.hyperparameters as JSON

`tailor_trainer.helpers` offers the S3 store, the checkpoint helper and the rank-0 metrics
endpoint to Python programs.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import NoReturn

from tailor_trainer.config import ENV_WORK_DIR, RunConfig
from tailor_trainer.errors import REASON_INVALID_SPEC, PermanentError

ENV_CHECKPOINT_URI = "TAILOR_CHECKPOINT_URI"
ENV_HYPERPARAMETERS = "TAILOR_HYPERPARAMETERS"


def custom_environment(cfg: RunConfig, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    if cfg.artifact_uri:
        env[ENV_CHECKPOINT_URI] = cfg.checkpoint_uri
    env.setdefault(ENV_WORK_DIR, tempfile.mkdtemp(prefix="tailor-"))
    env[ENV_HYPERPARAMETERS] = json.dumps(cfg.spec.hyperparameters.to_api())
    for item in cfg.spec.env or []:
        env[item.name] = item.value
    return env


def exec_custom(cfg: RunConfig) -> NoReturn:
    argv = list(cfg.spec.command or []) + list(cfg.spec.args or [])
    if not argv:
        raise PermanentError(REASON_INVALID_SPEC, "spec.command is required when task is custom")
    try:
        os.execvpe(argv[0], argv, custom_environment(cfg, dict(os.environ)))  # noqa: S606
    except OSError as exc:
        raise PermanentError(REASON_INVALID_SPEC,
                             f"cannot run spec.command {argv[0]!r}: {exc.strerror}") from exc
