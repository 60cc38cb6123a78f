"""The DDP training loop shared by the built-in recipes.

Each rank trains on its own shard of the training split. An epoch's batch plan is a pure
function of (seed, epoch, shard): a seeded permutation, cut into chunks that are sorted by
length (so batches hold inputs of similar length and padding stays small), then shuffled at
batch level. The data position is therefore just (epoch, batch index), and a resumed run
replays exactly the batches, learning rates and dropout masks the interrupted one would have
seen: the loss curve continues, it does not restart.

Every few optimizer steps (every step on CPUs, every `SYNC_EVERY_GPU` on GPUs, and always at
an epoch's end, at the last step and at `checkpoint.everySteps`) the ranks exchange one small
tensor: the losses and sample counts of the steps since the last exchange, and two flags
(rank 0's "checkpoint now", anyone's "SIGTERM received"), so every rank takes the same
decision at the same step. An exchange waits for the GPU; between exchanges the host queues
the next steps' work (batches are copied from pinned memory without waiting) and the GPU never
idles. Model selection and early stopping look at the validation split only.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from tailor.api.common import parse_duration
from tailor.api.trainingjob import TrainingJobSpec
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tailor_trainer.checkpoint import Checkpointer, cpu_clone
from tailor_trainer.dist import World, gather
from tailor_trainer.errors import (
    REASON_INVALID_SPEC,
    REASON_PREEMPTED,
    PermanentError,
    RetryableError,
)
from tailor_trainer.metrics import Progress
from tailor_trainer.recipes.base import Recipe

log = logging.getLogger(__name__)
BUCKET_BATCHES = 50
"""Batches per length-sorted chunk: enough to group similar lengths, few enough to stay random."""
CHECKPOINT_FORMAT = 1
SYNC_EVERY_GPU = 16
"""Optimizer steps between exchanges on a GPU: each exchange stalls the queue of GPU work."""


def batch_plan(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's batches (indexes into the shard), length-bucketed and shuffled."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    chunk = batch_size * BUCKET_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk].tolist(), key=lambda i: -lengths[i])
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device,
             dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class Shard:
    """One rank's encoded examples and their label indexes."""

    items: list[Any]
    labels: list[int]


@dataclass
class TrainResult:
    model: nn.Module
    """The selected model (best validation metric), unwrapped, in eval mode."""
    steps: int
    total_steps: int
    epochs_done: float
    best_step: int
    validation: dict[str, float]
    history: list[dict[str, float]]
    train_seconds: float
    samples_per_second: float
    resumed_from: int | None
    stopped_early: bool
    timeline: list[tuple[int, float]] = field(default_factory=list)
    """(step, monotonic time) at each exchange, when the GPU had finished that step."""


@dataclass
class PendingStep:
    """A step done on this rank whose numbers have not been exchanged yet."""

    step: int
    loss: torch.Tensor
    samples: int
    epoch: float
    lr: float


@dataclass
class LoopState:
    step: int = 0
    epoch: int = 0
    batch: int = 0
    best_metric: float = -math.inf
    best_step: int = -1
    bad_evals: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)


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


def _lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def confusion(logits: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    pred = logits.argmax(-1)
    return torch.bincount(labels * classes + pred, minlength=classes * classes).reshape(
        classes, classes)


def scores_from_confusion(matrix: np.ndarray) -> dict[str, float]:
    total = matrix.sum()
    tp = np.diag(matrix).astype(float)
    precision = np.divide(tp, matrix.sum(0), out=np.zeros_like(tp), where=matrix.sum(0) > 0)
    recall = np.divide(tp, matrix.sum(1), out=np.zeros_like(tp), where=matrix.sum(1) > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"accuracy": float(tp.sum() / total) if total else 0.0,
            "macro-f1": float(f1.mean())}


class Trainer:
    """Fine-tunes a recipe's model on every rank's shard; rank 0 reports progress."""

    def __init__(self, world: World, spec: TrainingJobSpec, recipe: Recipe, num_labels: int,
                 checkpointer: Checkpointer, progress: Progress | None,
                 log_metrics: Callable[[int, dict[str, float]], None]) -> None:
        self.world = world
        self.spec = spec
        self.hp = spec.hyperparameters
        self.recipe = recipe
        self.num_labels = num_labels
        self.checkpointer = checkpointer
        self.progress = progress
        self.log_metrics = log_metrics
        self.amp = autocast_dtype(self.hp.precision, world.device)
        self.interval = parse_duration(spec.checkpoint.interval).total_seconds()
        self.sync_every = SYNC_EVERY_GPU if world.device.type == "cuda" else 1
        self.dynamic_shapes: bool | None = None  # None: symbolic when input lengths vary

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Copy a collated batch to the device; from pinned memory, the copy does not wait."""
        if self.world.device.type != "cuda":
            return batch
        return {k: v.pin_memory().to(self.world.device, non_blocking=True)
                for k, v in batch.items()}

    # --- evaluation on the validation shard (all ranks) ----------------------------------------
    def _validate(self, model: nn.Module, val: Shard) -> dict[str, float]:
        model.eval()
        matrix = torch.zeros(self.num_labels, self.num_labels, dtype=torch.long)
        loss_sum = torch.zeros(1, dtype=torch.float64)
        order = sorted(range(len(val.items)), key=lambda i: -self.recipe.length(val.items[i]))
        size = max(self.hp.batch_size, 64)
        with torch.no_grad():
            for start in range(0, len(order), size):
                idx = order[start:start + size]
                batch = {k: v.to(self.world.device) for k, v in
                         self.recipe.collate([val.items[i] for i in idx], False).items()}
                labels = torch.tensor([val.labels[i] for i in idx], device=self.world.device)
                with autocast(self.world.device, self.amp):
                    logits = model(**batch).float()
                loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").cpu()
                matrix += confusion(logits, labels, self.num_labels).cpu()
        packed = torch.cat([matrix.flatten().double(), loss_sum]).to(self.world.device)
        if self.world.distributed:
            torch_dist.all_reduce(packed)
        packed = packed.cpu()
        matrix_np = packed[:-1].reshape(self.num_labels, self.num_labels).numpy().astype(np.int64)
        scores = scores_from_confusion(matrix_np)
        count = max(1, int(matrix_np.sum()))
        scores["loss"] = float(packed[-1]) / count
        model.train()
        return scores

    # --- checkpoint state ----------------------------------------------------------------------
    def _rng_state(self) -> dict[str, torch.Tensor]:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state(self.world.device)
        return state

    def _snapshot(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: Any, state: LoopState, best: dict[str, torch.Tensor] | None,
                  rngs: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "world_size": self.world.size,
            "loop": {"step": state.step, "epoch": state.epoch, "batch": state.batch,
                     "best_metric": state.best_metric, "best_step": state.best_step,
                     "bad_evals": state.bad_evals},
            "history": [dict(h) for h in state.history],
            "validation": [dict(v) for v in state.validation],
            "model": model.state_dict(),  # live: the checkpointer snapshots it
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "best": best if best is not None and state.best_step != state.step else None,
            "rng": rngs,
        }

    def _checkpoint(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    state: LoopState, best: dict[str, torch.Tensor] | None,
                    wait: bool) -> None:
        rngs = gather(self.world, self._rng_state())  # every rank takes part
        if self.world.is_main:
            snapshot = self._snapshot(model, optimizer, scheduler, state, best, rngs)
            self.checkpointer.save_async(state.step, snapshot)
            if wait:
                self.checkpointer.wait()

    # --- the loop --------------------------------------------------------------------------------
    def fit(self, train: Shard, val: Shard, stop: StopSignal,
            head: tuple[torch.Tensor, torch.Tensor] | None = None) -> TrainResult:
        """Train; `head` (weight, bias) initializes the classification head (a fitted probe)."""
        hp, world = self.hp, self.world
        torch.manual_seed(hp.seed)
        model = self.recipe.build(self.num_labels).to(world.device)
        if head is not None:
            linear = model.get_submodule("head")
            assert isinstance(linear, nn.Linear)
            with torch.no_grad():
                linear.weight.copy_(head[0])
                linear.bias.copy_(head[1])
        model.train()
        lengths = [self.recipe.length(item) for item in train.items]
        per_rank = gather(world, math.ceil(len(lengths) / hp.batch_size))
        batches_per_epoch = min(per_rank)
        steps_per_epoch = batches_per_epoch // hp.gradient_accumulation_steps
        if steps_per_epoch < 1:
            raise PermanentError(REASON_INVALID_SPEC,
                                 f"too little training data for one optimizer step: "
                                 f"{batches_per_epoch} batches of {hp.batch_size} per process, "
                                 f"gradientAccumulationSteps {hp.gradient_accumulation_steps}")
        total = hp.epochs * steps_per_epoch
        if hp.max_steps is not None:
            total = min(total, hp.max_steps)
        warmup = int(hp.warmup_ratio * total)
        fused = world.device.type == "cuda"
        optimizer = torch.optim.AdamW(_param_groups(model, hp.weight_decay), lr=hp.learning_rate,
                                      fused=fused)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total, warmup))
        state = LoopState()
        best: dict[str, torch.Tensor] | None = None
        resumed_from = self.checkpointer.latest()
        if resumed_from is not None:
            saved = self.checkpointer.load(resumed_from)
            if saved.get("world_size") != world.size:
                raise PermanentError(REASON_INVALID_SPEC,
                                     f"checkpoint step {resumed_from} was written by "
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
        else:
            torch.manual_seed(hp.seed * 1000 + world.rank)  # dropout differs per rank
        wrapped: nn.Module = model
        if world.distributed:
            ids = [world.device.index] if world.device.type == "cuda" else None
            wrapped = DistributedDataParallel(model, device_ids=ids)
        step_fn: nn.Module = wrapped
        if world.device.type == "cuda":
            # Compilation pays on GPUs; on CPUs its start-up costs more than it saves here.
            # Varying lengths compile once with symbolic shapes instead of once per length;
            # a compiler failure falls back to eager mode rather than failing the run.
            torch._dynamo.config.suppress_errors = True
            dynamic = self.dynamic_shapes
            if dynamic is None:
                dynamic = True if len(set(lengths)) > 1 else None
            if dynamic is False:  # one graph per padded width
                torch._dynamo.config.recompile_limit = 64
            step_fn = torch.compile(wrapped, dynamic=dynamic)  # type: ignore[assignment]
        scaler = torch.amp.GradScaler(enabled=self.amp == torch.float16)
        accum = hp.gradient_accumulation_steps
        every = self.spec.checkpoint.every_steps
        last_checkpoint = time.monotonic()
        started = time.monotonic()
        timeline: list[tuple[int, float]] = []
        pending: list[PendingStep] = []
        samples_seen = 0
        stopped_early = False
        if self.progress is not None:
            self.progress.update(state.step, total, state.epoch, math.nan, 0)
            self.progress.restart_window()
        done = state.step >= total
        while not done and state.epoch < hp.epochs:
            plan = batch_plan(lengths, hp.batch_size, hp.seed, state.epoch)
            plan = plan[:steps_per_epoch * accum]
            while state.batch < len(plan):
                loss_sum = torch.zeros((), device=world.device)
                samples = 0
                for micro in range(accum):
                    idx = plan[state.batch + micro]
                    batch = self.recipe.collate([train.items[i] for i in idx], True)
                    batch["labels"] = torch.tensor([train.labels[i] for i in idx])
                    batch = self._to_device(batch)
                    labels = batch.pop("labels")
                    sync = micro == accum - 1
                    ctx = (wrapped.no_sync() if world.distributed and not sync  # type: ignore[operator]
                           else contextlib.nullcontext())
                    with ctx:
                        with autocast(world.device, self.amp):
                            logits = step_fn(**batch)
                        loss = nn.functional.cross_entropy(logits.float(), labels)
                        scaler.scale(loss / accum).backward()  # type: ignore[no-untyped-call]
                    loss_sum += loss.detach()
                    samples += len(idx)
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                state.step += 1
                state.batch += accum
                samples_seen += samples
                pending.append(PendingStep(state.step, loss_sum / accum, samples,
                                           state.epoch + state.batch / len(plan),
                                           float(scheduler.get_last_lr()[0])))
                epoch_end = state.batch >= len(plan)
                done = state.step >= total
                at_every = every is not None and state.step % every == 0
                if not (epoch_end or done or at_every or state.step % self.sync_every == 0):
                    continue
                # The exchange: every rank reaches it at the same step (all conditions above
                # are functions of the step and the shared plan).
                due = world.is_main and (
                    time.monotonic() - last_checkpoint >= self.interval or at_every)
                flags = torch.tensor([float(due), float(stop.requested)], dtype=torch.float64)
                shared = torch.cat([
                    torch.stack([p.loss for p in pending]).double(),
                    torch.tensor([float(p.samples) for p in pending], dtype=torch.float64,
                                 device=world.device),
                    flags.to(world.device),
                ])
                if world.distributed:
                    torch_dist.all_reduce(shared)
                shared = shared.cpu()
                timeline.append((state.step, time.monotonic()))
                for i, done_step in enumerate(pending):
                    mean_loss = float(shared[i]) / world.size
                    state.history.append({"step": done_step.step, "loss": mean_loss,
                                          "lr": done_step.lr})
                    if self.progress is not None:
                        self.progress.update(done_step.step, total, done_step.epoch, mean_loss,
                                             int(shared[len(pending) + i]))
                    self.log_metrics(done_step.step, {"train_loss": mean_loss,
                                                      "learning_rate": done_step.lr,
                                                      "epoch": done_step.epoch})
                due_shared, stop_shared = float(shared[-2]), float(shared[-1])
                pending = []
                if epoch_end or done:
                    scores = self._validate(model, val)
                    scores["step"] = state.step
                    state.validation.append(scores)
                    self.log_metrics(state.step, {f"val_{k.replace('-', '_')}": v
                                                  for k, v in scores.items() if k != "step"})
                    metric = scores[self.spec.evaluation.metric]
                    if metric > state.best_metric:
                        state.best_metric, state.best_step, state.bad_evals = (
                            metric, state.step, 0)
                        best = cpu_clone(model.state_dict()) if world.is_main else None
                    else:
                        state.bad_evals += 1
                    patience = hp.early_stopping_patience
                    if patience and state.bad_evals >= patience:
                        stopped_early = done = True
                    if self.progress is not None:
                        self.progress.restart_window()
                if epoch_end:
                    state.epoch += 1
                    state.batch = 0
                if stop_shared > 0:
                    self._checkpoint(model, optimizer, scheduler, state, best, wait=True)
                    raise RetryableError(REASON_PREEMPTED,
                                         f"stopped by SIGTERM at step {state.step}; "
                                         "checkpoint written, the run resumes from it")
                if due_shared > 0 and not done:
                    self._checkpoint(model, optimizer, scheduler, state, best, wait=False)
                    last_checkpoint = time.monotonic()
                if done or epoch_end:
                    break
        if self.world.is_main:
            self.checkpointer.wait()
        elapsed = time.monotonic() - started
        if best is not None and world.is_main and state.best_step != state.step:
            model.load_state_dict(best)
        model.eval()
        final = next((v for v in state.validation if v["step"] == state.best_step),
                     state.validation[-1] if state.validation else {})
        return TrainResult(
            model=model, steps=state.step, total_steps=total,
            epochs_done=state.step / steps_per_epoch, best_step=state.best_step,
            validation={k: float(v) for k, v in final.items()}, history=state.history,
            train_seconds=elapsed,
            samples_per_second=samples_seen * world.size / elapsed if elapsed > 0 else 0.0,
            resumed_from=resumed_from, stopped_early=stopped_early, timeline=timeline,
        )
