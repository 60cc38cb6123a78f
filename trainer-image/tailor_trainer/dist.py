"""The process group and the few collective patterns the trainer relies on.

Rank 0 coordinates (checks, splits, evaluation, publishing); every rank must still leave a
phase together, with the same outcome, or one rank waits in a collective until a timeout while
its peer has already exited. `agree` is that rendezvous: each rank runs its part, then all
learn whether any failed and re-raise the same error, so every process exits with the same
code and the termination message names the real cause.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from tailor_trainer.errors import REASON_PEER_FAILED, RetryableError, TrainerError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int
    local_rank: int
    size: int
    device: torch.device
    cpu_group: Any = None
    """A gloo group for object collectives when the main group is NCCL."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(timeout_s: float = 1800) -> World:
    """Join the process group torchrun prepared (NCCL on GPUs, gloo on CPUs)."""
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    # Object collectives (errors, plans) travel over a CPU group.
    cpu_group = dist.new_group(backend="gloo") if size > 1 and backend == "nccl" else None
    return World(rank=rank, local_rank=local_rank, size=size, device=device, cpu_group=cpu_group)


def broadcast(world: World, value: T) -> T:
    """Rank 0's value on every rank (what other ranks pass is ignored).

    Call it outside `agree` parts: a collective inside a part that fails on one rank would
    pair up with the error exchange of another.
    """
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, group=world.cpu_group)
    return box[0]


def gather(world: World, value: T) -> list[T]:
    """Every rank's value, in rank order, on every rank."""
    if not world.distributed:
        return [value]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, value, group=world.cpu_group)
    return out


def agree(world: World, part: Callable[[], T]) -> T:
    """Run this rank's part of a phase; if any rank failed, raise its error on every rank.

    The part must not itself call collectives (see `broadcast`).
    """
    error: TrainerError | None = None
    result: T | None = None
    try:
        result = part()
    except TrainerError as exc:
        error = exc
    except Exception as exc:
        if not world.distributed:
            raise
        # A crash: tell the peers before dying, so they do not wait for a timeout.
        error = RetryableError(REASON_PEER_FAILED,
                               f"rank {world.rank} crashed: {type(exc).__name__}: {exc}")
        gather(world, error)
        raise
    for rank_error in gather(world, error):
        if rank_error is not None:
            raise rank_error
    return result  # type: ignore[return-value]


def any_flag(world: World, flag: bool) -> bool:
    """True on every rank when any rank's flag is set (a cheap all-reduce)."""
    if not world.distributed:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=world.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier(group=world.cpu_group)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
