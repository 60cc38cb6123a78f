"""Helpers for custom training programs (task: custom) running in the trainer image.

    from tailor_trainer import helpers
    store = helpers.store()                    # S3 (or local paths) with the job's settings
    ckpt = helpers.checkpointer()              # save_async / latest / load under the run
    progress = helpers.serve_progress()        # rank 0: the contract's Prometheus gauges
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tailor_trainer.checkpoint import Checkpointer
from tailor_trainer.config import ENV_WORK_DIR, load_config
from tailor_trainer.metrics import Progress
from tailor_trainer.recipes.custom import ENV_CHECKPOINT_URI
from tailor_trainer.storage import Store


def store() -> Store:
    return Store(load_config().spec.storage)


def checkpointer(keep: int | None = None) -> Checkpointer:
    cfg = load_config()
    uri = os.environ.get(ENV_CHECKPOINT_URI) or cfg.checkpoint_uri
    work = Path(os.environ.get(ENV_WORK_DIR) or tempfile.mkdtemp(prefix="tailor-"))
    return Checkpointer(Store(cfg.spec.storage), uri, work, keep or cfg.spec.checkpoint.keep)


def serve_progress() -> Progress | None:
    """The rank-0 metrics endpoint; None on other ranks."""
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    progress = Progress()
    progress.serve(load_config().metrics_port)
    return progress
