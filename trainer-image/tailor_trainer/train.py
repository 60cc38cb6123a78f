"""The DDP training loop shared by the built-in recipes.

Each rank trains on its own shard of the training split. An epoch's batch plan is a pure
function of (seed, epoch, shard): a seeded permutation, cut into chunks that are sorted by
length (so batches hold inputs of similar length and padding stays small), then shuffled at
batch level (schedule.py). The data position is therefore just (epoch, batch index), and a
resumed run replays exactly the batches, learning rates and dropout masks the interrupted one
would have seen: the loss curve continues, it does not restart (resume.py).

Every few optimizer steps (every step on CPUs, every `SYNC_EVERY_GPU` on GPUs, and always at
an epoch's end, at the last step and at `checkpoint.everySteps`) the ranks exchange one small
tensor: the losses and sample counts of the steps since the last exchange, and two flags
(rank 0's "checkpoint now", anyone's "SIGTERM received"), so every rank takes the same
decision at the same step. An exchange waits for the GPU; between exchanges the host queues
the next steps' work (batches are copied from pinned memory without waiting) and the GPU never
idles. Model selection and early stopping look at the validation split only: at
evaluation.metric, or in trial mode at the search's objective (objective.py). A NaN or infinite
training loss stops the run at the exchange that sees it (a permanent NonFiniteLoss).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as torch_dist
from tailor_contract.common import parse_duration
from tailor_contract.trainingjob import TrainingJobSpec
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tailor_trainer import resume
from tailor_trainer.checkpoint import Checkpointer, cpu_clone
from tailor_trainer.dist import World, gather
from tailor_trainer.errors import (
    REASON_INVALID_SPEC,
    REASON_PREEMPTED,
    PermanentError,
    RetryableError,
)
from tailor_trainer.metrics import Progress
from tailor_trainer.objective import Objective, check_finite, curve
from tailor_trainer.recipes.base import Recipe
from tailor_trainer.resume import LoopState, StopSignal
from tailor_trainer.schedule import (
    autocast,
    autocast_dtype,
    batch_plan,
    lr_lambda,
    param_groups,
)
from tailor_trainer.validate import validate

log = logging.getLogger(__name__)
SYNC_EVERY_GPU = 16
"""Optimizer steps between exchanges on a GPU: each exchange stalls the queue of GPU work."""

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
    validations: list[dict[str, float]] = field(default_factory=list)
    """The scores of every validation, in order (with their step)."""


@dataclass
class PendingStep:
    """A step done on this rank whose numbers have not been exchanged yet."""

    step: int
    loss: torch.Tensor
    samples: int
    epoch: float
    lr: float


@dataclass
class Session:
    """One call of `Trainer.fit`: what every step reads and updates."""

    model: nn.Module
    """Unwrapped; `wrapped` is its DDP wrapper and `step_fn` what a step calls (compiled)."""
    wrapped: nn.Module
    step_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    state: LoopState
    steps_per_epoch: int
    total: int
    best: dict[str, torch.Tensor] | None = None
    resumed_from: int | None = None
    pending: list[PendingStep] = field(default_factory=list)
    timeline: list[tuple[int, float]] = field(default_factory=list)
    samples_seen: int = 0
    stopped_early: bool = False
    started: float = field(default_factory=time.monotonic)
    last_checkpoint: float = field(default_factory=time.monotonic)


class Trainer:
    """Fine-tunes a recipe's model on every rank's shard; rank 0 reports progress."""

    def __init__(self, world: World, spec: TrainingJobSpec, recipe: Recipe, num_labels: int,
                 checkpointer: Checkpointer, progress: Progress | None,
                 log_metrics: Callable[[int, dict[str, float]], None], *,
                 objective: Objective | None = None, report_objective: bool = False) -> None:
        """`objective` selects the best epoch (default: evaluation.metric, maximized);
        `report_objective` (trial mode) also puts it on the progress endpoint per epoch."""
        self.world = world
        self.spec = spec
        self.hp = spec.hyperparameters
        self.recipe = recipe
        self.num_labels = num_labels
        self.checkpointer = checkpointer
        self.progress = progress
        self.log_metrics = log_metrics
        self.objective = objective or Objective(spec.evaluation.metric)
        self.report_objective = report_objective
        self.amp = autocast_dtype(self.hp.precision, world.device)
        self.interval = parse_duration(spec.checkpoint.interval).total_seconds()
        self.sync_every = SYNC_EVERY_GPU if world.device.type == "cuda" else 1
        self.dynamic_shapes: bool | None = None  # None: symbolic when input lengths vary

    def fit(self, train: Shard, val: Shard, stop: StopSignal,
            head: tuple[torch.Tensor, torch.Tensor] | None = None) -> TrainResult:
        """Train; `head` (weight, bias) initializes the classification head (a fitted probe)."""
        hp = self.hp
        lengths = [self.recipe.length(item) for item in train.items]
        session = self._start(lengths, head)
        state = session.state
        self._report(state.validation)  # a resumed trial's earlier epochs
        if self.progress is not None:
            self.progress.update(state.step, session.total, state.epoch, math.nan, 0)
            self.progress.restart_window()
        done = state.step >= session.total
        while not done and state.epoch < hp.epochs:
            plan = batch_plan(lengths, hp.batch_size, hp.seed, state.epoch)
            plan = plan[:session.steps_per_epoch * hp.gradient_accumulation_steps]
            done = self._epoch(session, plan, train, val, stop)
        if self.world.is_main:
            self.checkpointer.wait()
        return self._result(session)

    def _start(self, lengths: list[int],
               head: tuple[torch.Tensor, torch.Tensor] | None) -> Session:
        """The model (resumed from the newest checkpoint if any), optimizer and schedule."""
        hp, world = self.hp, self.world
        torch.manual_seed(hp.seed)
        model = self._build(head)
        steps_per_epoch, total = self._steps(len(lengths))
        # Fused on CPUs too: on MiniLM-L6 (one CPU thread) a fused step took 0.013 s against
        # 0.11 s for the default kernel, a fifth of the whole training step (bench/RESULTS.md).
        optimizer = torch.optim.AdamW(param_groups(model, hp.weight_decay), lr=hp.learning_rate,
                                      fused=world.device.type in ("cuda", "cpu"))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(total, int(hp.warmup_ratio * total)))
        resumed = resume.restore(self.checkpointer, world, model, optimizer, scheduler)
        if resumed is None:
            torch.manual_seed(hp.seed * 1000 + world.rank)  # dropout differs per rank
        wrapped: nn.Module = model
        if world.distributed:
            ids = [world.device.index] if world.device.type == "cuda" else None
            wrapped = DistributedDataParallel(model, device_ids=ids)
        return Session(
            model=model, wrapped=wrapped, step_fn=self._compiled(wrapped, lengths),
            optimizer=optimizer, scheduler=scheduler,
            scaler=torch.amp.GradScaler(enabled=self.amp == torch.float16),
            state=resumed.state if resumed else LoopState(),
            steps_per_epoch=steps_per_epoch, total=total,
            best=resumed.best if resumed else None,
            resumed_from=resumed.step if resumed else None)

    def _build(self, head: tuple[torch.Tensor, torch.Tensor] | None) -> nn.Module:
        model = self.recipe.build(self.num_labels).to(self.world.device)
        if head is not None:
            linear = model.get_submodule("head")
            assert isinstance(linear, nn.Linear)
            with torch.no_grad():
                linear.weight.copy_(head[0])
                linear.bias.copy_(head[1])
        model.train()
        return model

    def _steps(self, examples: int) -> tuple[int, int]:
        """Optimizer steps per epoch (the same on every rank) and in all."""
        hp = self.hp
        per_rank = gather(self.world, math.ceil(examples / hp.batch_size))
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
        return steps_per_epoch, total

    def _compiled(self, wrapped: nn.Module, lengths: list[int]) -> nn.Module:
        if self.world.device.type != "cuda":
            return wrapped
        # Compilation pays on GPUs; on CPUs its start-up costs more than it saves here.
        # Varying lengths compile once with symbolic shapes instead of once per length;
        # a compiler failure falls back to eager mode rather than failing the run.
        torch._dynamo.config.suppress_errors = True
        dynamic = self.dynamic_shapes
        if dynamic is None:
            dynamic = True if len(set(lengths)) > 1 else None
        if dynamic is False:  # one graph per padded width
            torch._dynamo.config.recompile_limit = 64
        return torch.compile(wrapped, dynamic=dynamic)  # type: ignore[return-value]

    def _epoch(self, s: Session, plan: list[list[int]], train: Shard, val: Shard,
               stop: StopSignal) -> bool:
        """Steps through the rest of an epoch's plan; True when training is over."""
        state, every = s.state, self.spec.checkpoint.every_steps
        while state.batch < len(plan):
            self._step(s, plan, train)
            epoch_end = state.batch >= len(plan)
            done = state.step >= s.total
            at_every = every is not None and state.step % every == 0
            if not (epoch_end or done or at_every or state.step % self.sync_every == 0):
                continue
            # The exchange: every rank reaches it at the same step (all conditions above
            # are functions of the step and the shared plan).
            due, stop_requested = self._exchange(s, stop, at_every)
            if epoch_end or done:
                done = self._select(s, val) or done
            if epoch_end:
                state.epoch += 1
                state.batch = 0
            if stop_requested:
                self._checkpoint(s, wait=True)
                raise RetryableError(REASON_PREEMPTED,
                                     f"stopped by SIGTERM at step {state.step}; "
                                     "checkpoint written, the run resumes from it")
            if due and not done:
                self._checkpoint(s, wait=False)
                s.last_checkpoint = time.monotonic()
            if done or epoch_end:
                return done
        return False

    def _step(self, s: Session, plan: list[list[int]], train: Shard) -> None:
        """One optimizer step over `gradientAccumulationSteps` batches of the plan."""
        world, state, accum = self.world, s.state, self.hp.gradient_accumulation_steps
        loss_sum = torch.zeros((), device=world.device)
        samples = 0
        for micro in range(accum):
            idx = plan[state.batch + micro]
            batch = self.recipe.collate([train.items[i] for i in idx], True)
            batch["labels"] = torch.tensor([train.labels[i] for i in idx])
            batch = self._to_device(batch)
            labels = batch.pop("labels")
            sync = micro == accum - 1
            ctx = (s.wrapped.no_sync() if world.distributed and not sync  # type: ignore[operator]
                   else contextlib.nullcontext())
            with ctx:
                with autocast(world.device, self.amp):
                    logits = s.step_fn(**batch)
                loss = nn.functional.cross_entropy(logits.float(), labels)
                s.scaler.scale(loss / accum).backward()  # type: ignore[no-untyped-call]
            loss_sum += loss.detach()
            samples += len(idx)
        s.scaler.unscale_(s.optimizer)
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), 1.0)
        s.scaler.step(s.optimizer)
        s.scaler.update()
        s.optimizer.zero_grad(set_to_none=True)
        s.scheduler.step()
        state.step += 1
        state.batch += accum
        s.samples_seen += samples
        s.pending.append(PendingStep(state.step, loss_sum / accum, samples,
                                     state.epoch + state.batch / len(plan),
                                     float(s.scheduler.get_last_lr()[0])))

    def _exchange(self, s: Session, stop: StopSignal, at_every: bool) -> tuple[bool, bool]:
        """Share the pending steps' losses and the flags; record the steps. Returns (checkpoint
        due, SIGTERM received), the same on every rank."""
        world, pending = self.world, s.pending
        due = world.is_main and (
            time.monotonic() - s.last_checkpoint >= self.interval or at_every)
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
        s.timeline.append((s.state.step, time.monotonic()))
        for i, done_step in enumerate(pending):
            mean_loss = float(shared[i]) / world.size
            check_finite(mean_loss, done_step.step, done_step.lr)
            s.state.history.append({"step": done_step.step, "loss": mean_loss,
                                    "lr": done_step.lr})
            if self.progress is not None:
                self.progress.update(done_step.step, s.total, done_step.epoch, mean_loss,
                                     int(shared[len(pending) + i]))
            self.log_metrics(done_step.step, {"train_loss": mean_loss,
                                              "learning_rate": done_step.lr,
                                              "epoch": done_step.epoch})
        s.pending = []
        return float(shared[-2]) > 0, float(shared[-1]) > 0

    def _select(self, s: Session, val: Shard) -> bool:
        """Validate, keep the best model so far; True when early stopping ends training."""
        state = s.state
        scores = validate(self.world, self.recipe, s.model, val, self.num_labels,
                          max(self.hp.batch_size, 64), self.amp)
        scores["step"] = state.step
        state.validation.append(scores)
        self.log_metrics(state.step, {f"val_{k.replace('-', '_')}": v
                                      for k, v in scores.items() if k != "step"})
        self._report(state.validation)
        metric = self.objective.score(scores)
        if metric > state.best_metric:
            state.best_metric, state.best_step, state.bad_evals = metric, state.step, 0
            s.best = cpu_clone(s.model.state_dict()) if self.world.is_main else None
        else:
            state.bad_evals += 1
        patience = self.hp.early_stopping_patience
        if patience and state.bad_evals >= patience:
            s.stopped_early = True
        if self.progress is not None:
            self.progress.restart_window()
        return s.stopped_early

    def _report(self, validation: list[dict[str, float]]) -> None:
        if self.report_objective and self.progress is not None:
            for epoch, value in curve(validation, self.objective):
                self.progress.objective_at(epoch, value)

    def _result(self, s: Session) -> TrainResult:
        """The best model (rank 0 loads its weights) and the numbers of the run."""
        world, state, model = self.world, s.state, s.model
        elapsed = time.monotonic() - s.started
        if s.best is not None and world.is_main and state.best_step != state.step:
            model.load_state_dict(s.best)
        model.eval()
        final = next((v for v in state.validation if v["step"] == state.best_step),
                     state.validation[-1] if state.validation else {})
        return TrainResult(
            model=model, steps=state.step, total_steps=s.total,
            epochs_done=state.step / s.steps_per_epoch, best_step=state.best_step,
            validation={k: float(v) for k, v in final.items()}, history=state.history,
            train_seconds=elapsed,
            samples_per_second=s.samples_seen * world.size / elapsed if elapsed > 0 else 0.0,
            resumed_from=s.resumed_from, stopped_early=s.stopped_early, timeline=s.timeline,
            validations=[dict(v) for v in state.validation],
        )

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Copy a collated batch to the device; from pinned memory, the copy does not wait."""
        if self.world.device.type != "cuda":
            return batch
        return {k: v.pin_memory().to(self.world.device, non_blocking=True)
                for k, v in batch.items()}

    def _checkpoint(self, s: Session, wait: bool) -> None:
        rngs = gather(self.world, resume.rng_state(self.world))  # every rank takes part
        if self.world.is_main:
            content = resume.snapshot(self.world, s.model, s.optimizer, s.scheduler, s.state,
                                      s.best, rngs)
            self.checkpointer.save_async(s.state.step, content)
            if wait:
                self.checkpointer.wait()
