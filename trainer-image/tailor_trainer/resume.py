"""What a checkpoint of the training loop holds, how a run resumes from it, and SIGTERM.

A checkpoint holds the model, optimizer and scheduler, every rank's RNG state, the data
position (epoch, batch index into the epoch's plan), the best-so-far and the loss curve. The
batch plan is a pure function of (seed, epoch, shard) (`schedule.batch_plan`), so the position
is all a resumed run needs to replay exactly the batches, learning rates and dropout masks the
interrupted one would have seen: the loss curve continues, it does not restart.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import torch
from torch import nn

from tailor_trainer.checkpoint import Checkpointer, cpu_clone
from tailor_trainer.dist import World
from tailor_trainer.errors import REASON_INVALID_SPEC, PermanentError

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 1


@dataclass
class LoopState:
    """The loop's position and model selection, as checkpointed."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    best_metric: float = -math.inf
    best_step: int = -1
    bad_evals: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Resumed:
    """What `restore` found: the loop's state and the best model's weights so far."""

    state: LoopState
    best: dict[str, torch.Tensor] | None
    step: int


class StopSignal:
    """SIGTERM during training asks for a checkpoint and an orderly exit at the next step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignal]:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, self._previous)


def rng_state(world: World) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state(world.device)
    return state


def snapshot(world: World, model: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: Any, state: LoopState, best: dict[str, torch.Tensor] | None,
             rngs: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """The checkpoint's content; live tensors, which the checkpointer copies."""
    return {
        "format": CHECKPOINT_FORMAT,
        "world_size": world.size,
        "loop": {"step": state.step, "epoch": state.epoch, "batch": state.batch,
                 "best_metric": state.best_metric, "best_step": state.best_step,
                 "bad_evals": state.bad_evals},
        "history": [dict(h) for h in state.history],
        "validation": [dict(v) for v in state.validation],
        "model": model.state_dict(),  # live: the checkpointer snapshots it
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        # The best model is the live one when it was selected at this very step.
        "best": best if best is not None and state.best_step != state.step else None,
        "rng": rngs,
    }


def restore(checkpointer: Checkpointer, world: World, model: nn.Module,
            optimizer: torch.optim.Optimizer, scheduler: Any) -> Resumed | None:
    """Load the newest complete checkpoint into model, optimizer, scheduler and this rank's
    RNGs; None when there is none. Exact resume needs the world size it was written with."""
    step = checkpointer.latest()
    if step is None:
        return None
    saved = checkpointer.load(step)
    if saved.get("world_size") != world.size:
        raise PermanentError(REASON_INVALID_SPEC,
                             f"checkpoint step {step} was written by "
                             f"{saved.get('world_size')} processes, this run has "
                             f"{world.size}; exact resume needs the same world size")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    loop = saved["loop"]
    state = LoopState(step=int(loop["step"]), epoch=int(loop["epoch"]),
                      batch=int(loop["batch"]), best_metric=float(loop["best_metric"]),
                      best_step=int(loop["best_step"]), bad_evals=int(loop["bad_evals"]),
                      history=list(saved["history"]),
                      validation=list(saved["validation"]))
    best = saved["best"]
    if best is None and state.best_step == state.step:
        best = cpu_clone(model.state_dict())
    rng = saved["rng"][world.rank]
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"], world.device)
    log.info("resumed from checkpoint step %d (epoch %d, batch %d)", state.step,
             state.epoch, state.batch)
    return Resumed(state, best, step)
