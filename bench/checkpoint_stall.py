"""Checkpoint stall: Tailor's asynchronous snapshot against torch.distributed.checkpoint.async_save.

One training loop (all-MiniLM-L6-v2 with a classification head, AdamW, random tokens), the
same state on every side (`get_state_dict(model, optimizer)`: weights and both AdamW moments),
a checkpoint every `--every` steps, written to the same local disk. Sides:
- none: the loop without checkpoints (the reference for the slowdown);
- Tailor: `tailor_trainer.checkpoint.Checkpointer.save_async` (copies into reused host buffers,
  then torch.save, SHA-256 and the store's put and marker on a thread);
- DCP: `torch.distributed.checkpoint.async_save` with the thread and the process executor
  (`async_checkpointer_type`), each with its default staging and with a `DefaultStager`
  (pinned/shared memory, staging in the background; the loop then waits for the staging to
  finish before the next optimizer step, as DCP requires). A save waits for the previous one,
  as DCP's docs ask. DCP needs a process group: a world of 1 (gloo on a CPU, gloo and NCCL on
  a GPU).

Per checkpoint: `blocked`, the time the training thread spends inside the checkpoint calls and
waits; `slowdown`, (loop time with checkpoints - without) / checkpoints, which also counts the
background work's contention for the CPU (on a 2-vCPU machine, most of it); `durable`, from the
call to the state being on disk (Tailor: the COMPLETE marker; DCP: the upload future). Every
side runs `--rounds` times, alternating; the best round of each is reported.

    python bench/checkpoint_stall.py [--small] [--rounds 2] [--out results.md]

On a GPU (bf16 autocast, full sizes): `python bench/checkpoint_stall.py`.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
import torch.distributed as dist
from tailor_trainer.checkpoint import Checkpointer
from tailor_trainer.storage import Store
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
from torch.distributed.checkpoint.state_dict import get_state_dict
from torch.distributed.checkpoint.state_dict_saver import AsyncCheckpointerType, async_save
from trainer_cases import gpu, minilm_dir, set_threads, sync


@dataclass
class Tally:
    blocked: list[float] = field(default_factory=list)
    durable: list[float] = field(default_factory=list)
    loop_s: float = 0.0


class TimedCheckpointer(Checkpointer):
    """Tailor's Checkpointer, noting when each background write has finished."""

    finished: list[float]

    def _write(self, step: int, state: dict[str, Any], copied: Any) -> None:
        super()._write(step, state, copied)
        self.finished.append(time.monotonic())


class Saver:
    """One side: `save` runs in the training thread; `before_step` waits on staging if any."""

    def __init__(self, name: str, work: Path) -> None:
        self.name = name
        self.work = work
        self.started: list[float] = []
        self.done: list[float] = []
        self._pending: Any = None
        self._staging: Any = None

    def save(self, step: int, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def before_step(self) -> None:
        if self._staging is not None:
            self._staging.result()
            self._staging = None

    def finish(self) -> None:
        raise NotImplementedError


class TailorSaver(Saver):
    def __init__(self, name: str, work: Path) -> None:
        super().__init__(name, work)
        self.ckpt = TimedCheckpointer(Store(), str(work / "store"), work, keep=2)
        self.ckpt.finished = self.done

    def save(self, step: int, state: dict[str, Any]) -> None:
        self.started.append(time.monotonic())
        self.ckpt.save_async(step, state)

    def finish(self) -> None:
        self.ckpt.wait()


def new_stager() -> DefaultStager:
    return DefaultStager(StagingOptions(use_pinned_memory=gpu(), use_non_blocking_copy=gpu()))


def spent(stager: DefaultStager) -> bool:
    """Whether the stager can stage no more: torch 2.11's DefaultStager closes its copier after
    every staging (its copy table is emptied; the next staging fails with KeyError), 2.15's
    does not. There a new one per checkpoint does what 2.11 does inside one (its pinned
    buffers are freed after every staging too)."""
    copier = getattr(stager, "_state_dict_stager", None)
    return not getattr(copier, "_deepcopy_dispatch", True)


class DcpSaver(Saver):
    def __init__(self, name: str, work: Path, process: bool, stager: bool) -> None:
        super().__init__(name, work)
        self.kind = AsyncCheckpointerType.PROCESS if process else AsyncCheckpointerType.THREAD
        self.stager = new_stager() if stager else None

    def save(self, step: int, state: dict[str, Any]) -> None:
        if self._pending is not None:
            self._pending.result()  # one save in flight at a time
        if self.stager is not None and spent(self.stager):
            self.stager.close()
            self.stager = new_stager()
        self.started.append(time.monotonic())
        response: Any = async_save(state, checkpoint_id=str(self.work / f"step-{step:08d}"),
                                  async_checkpointer_type=self.kind,
                                  async_stager=self.stager)
        upload = getattr(response, "upload_completion", response)
        self._staging = getattr(response, "staging_completion", None)
        upload.add_done_callback(lambda _: self.done.append(time.monotonic()))
        self._pending = upload

    def finish(self) -> None:
        if self._pending is not None:
            self._pending.result()
        if self.stager is not None:
            self.stager.close()


@dataclass
class Setup:
    batch: int
    seq: int
    steps: int
    every: int
    warm: int


def model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(minilm_dir()), num_labels=5)
    device = torch.device("cuda" if gpu() else "cpu")
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=gpu())
    return model, optimizer


def batches(setup: Setup, vocab: int) -> list[dict[str, torch.Tensor]]:
    rng = random.Random(0)  # noqa: S311 (reproducible data, not a secret)
    device = torch.device("cuda" if gpu() else "cpu")
    out = []
    for _ in range(setup.steps):
        ids = [[rng.randrange(1000, vocab) for _ in range(setup.seq)] for _ in range(setup.batch)]
        out.append({"input_ids": torch.tensor(ids, device=device),
                    "labels": torch.tensor([rng.randrange(5) for _ in range(setup.batch)],
                                           device=device)})
    return out


def train(setup: Setup, saver: Saver | None,
          data: list[dict[str, torch.Tensor]]) -> Tally:
    """The loop from step `warm` on is timed; checkpoints at multiples of `every` after it."""
    model, optimizer = model_and_optimizer()
    tally = Tally()
    started = 0.0
    for step, batch in enumerate(data, start=1):
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=gpu()):
            loss = model(**batch).loss
        loss.backward()
        if saver is not None:
            t0 = time.monotonic()
            saver.before_step()
            if tally.blocked:  # staging of the last checkpoint: part of its stall
                tally.blocked[-1] += time.monotonic() - t0
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step == setup.warm:
            sync()
            started = time.monotonic()
        if saver is not None and step > setup.warm and (step - setup.warm) % setup.every == 0:
            model_sd, optim_sd = get_state_dict(model, optimizer)
            t0 = time.monotonic()
            saver.save(step, {"model": model_sd, "optimizer": optim_sd})
            tally.blocked.append(time.monotonic() - t0)
    sync()
    tally.loop_s = time.monotonic() - started
    if saver is not None:
        saver.finish()
        tally.durable = [d - s for s, d in zip(saver.started, saver.done, strict=False)]
    return tally


def init_world() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")
    # async_save needs a CPU backend in the group (it refuses NCCL alone).
    dist.init_process_group("cpu:gloo,cuda:nccl" if gpu() else "gloo", rank=0, world_size=1)


def sides(work: Path) -> dict[str, Callable[[Path], Saver | None]]:
    return {
        "no checkpoints": lambda d: None,
        "Tailor Checkpointer.save_async": lambda d: TailorSaver("tailor", d),
        "DCP async_save, thread, default staging": lambda d: DcpSaver("dcp", d, False, False),
        "DCP async_save, thread, DefaultStager": lambda d: DcpSaver("dcp", d, False, True),
        "DCP async_save, process, default staging": lambda d: DcpSaver("dcp", d, True, False),
        "DCP async_save, process, DefaultStager": lambda d: DcpSaver("dcp", d, True, True),
    }


def report(results: dict[str, list[Tally]], setup: Setup, emit: Callable[[str], None]) -> None:
    base = min(t.loop_s for t in results["no checkpoints"])
    interval = base / (setup.steps - setup.warm) * setup.every
    emit(f"| side (best of {len(results['no checkpoints'])} rounds) | checkpoints | blocked s "
         "per checkpoint (mean, max) | slowdown s per checkpoint | % of interval | durable s "
         "(mean) |")
    emit("|---|---|---|---|---|---|")
    for name, tallies in results.items():
        if name == "no checkpoints":
            emit(f"| {name} | 0 | | loop {base:.2f} s, interval {interval:.2f} s | | |")
            continue
        best = min(tallies, key=lambda t: t.loop_s)
        n = max(len(best.blocked), 1)
        blocked = min(sum(t.blocked) / max(len(t.blocked), 1) for t in tallies)
        peak = min(max(t.blocked, default=0.0) for t in tallies)
        slow = (best.loop_s - base) / n
        durable = min(sum(t.durable) / max(len(t.durable), 1) for t in tallies)
        emit(f"| {name} | {n} | {blocked:.3f}, {peak:.3f} | {slow:.3f} | "
             f"{100 * slow / interval:.1f}% | {durable:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="a CPU-sized loop")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--every", type=int, help="steps between checkpoints")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default: 1 with --small, else torch's)")
    args = parser.parse_args()
    set_threads(args.threads if args.threads is not None else int(args.small))
    setup = (Setup(4, 32, 28, args.every or 6, 4) if args.small
             else Setup(256, 128, 416, args.every or 96, 32))

    def emit(line: str) -> None:
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as handle:
                handle.write(line + "\n")

    emit(f"# checkpoint stall: {torch.cuda.get_device_name() if gpu() else 'CPU'} "
         f"({os.cpu_count()} cores); torch {torch.__version__}, Python "
         f"{platform.python_version()}; MiniLM-L6 + head, AdamW, batch {setup.batch}, "
         f"{setup.seq} tokens, {setup.steps} steps, a checkpoint every {setup.every} steps "
         f"after step {setup.warm}; load average "
         f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    init_world()
    from transformers import AutoTokenizer

    data = batches(setup, AutoTokenizer.from_pretrained(str(minilm_dir())).vocab_size)
    results: dict[str, list[Tally]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        for r in range(args.rounds):
            for name, make in sides(Path(tmp)).items():
                work = Path(tempfile.mkdtemp(dir=tmp))
                tally = train(setup, make(work), data)
                results.setdefault(name, []).append(tally)
                print(f"round {r + 1}: {name}: loop {tally.loop_s:.2f} s, blocked "
                      f"{[round(b, 3) for b in tally.blocked]}, durable "
                      f"{[round(d, 2) for d in tally.durable]}", flush=True)
    report(results, setup, emit)
    emit(f"load average at end {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
