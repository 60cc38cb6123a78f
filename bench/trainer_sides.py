"""The two sides of the trainer bench: Tailor's loop (eager or compiled) and the HF Trainer.

Tailor runs `tailor_trainer.train.Trainer` itself; the only change is `compiled`, which picks
eager or compiled explicitly (the shipped trainer compiles on a GPU and runs eager on a CPU).
The HF Trainer runs with one `HFConfig` of the options a tuned user would try.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tailor_contract.trainingjob import TrainingJobSpec
from tailor_trainer.checkpoint import Checkpointer
from tailor_trainer.dist import World
from tailor_trainer.recipes.text import TextRecipe
from tailor_trainer.resume import StopSignal
from tailor_trainer.storage import Store
from tailor_trainer.train import Shard, Trainer, TrainResult
from trainer_cases import LABELS, Case, Data, best_window, gpu, sync


class BenchTrainer(Trainer):
    """Tailor's trainer with compilation chosen by the bench (None: the shipped choice)."""

    compile_choice: bool | None = None

    def _compiled(self, wrapped: torch.nn.Module, lengths: list[int]) -> torch.nn.Module:
        if self.compile_choice is None or (self.compile_choice and gpu()):
            return super()._compiled(wrapped, lengths)
        if not self.compile_choice:
            return wrapped
        # The shipped GPU branch's choice of shapes, on a CPU.
        dynamic = True if len(set(lengths)) > 1 else None
        return torch.compile(wrapped, dynamic=dynamic)  # type: ignore[return-value]


def tailor_spec(case: Case, data: Data, model_dir: Path) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate({
        "task": "text-classification", "model": {"base": str(model_dir)},
        "data": {"uri": "/unused", "columns": {"text": "text"}},
        "output": {"uri": "s3://unused/x"}, "checkpoint": {"interval": "24h"},
        "hyperparameters": {"epochs": case.epochs if case.texts else 1, "maxSteps": data.steps,
                            "batchSize": case.batch, "maxSequenceLength": case.seq,
                            "earlyStoppingPatience": 0, "learningRate": 5e-5},
    })


def tailor_fit(case: Case, data: Data, model_dir: Path, work: Path,
               compiled: bool) -> TrainResult:
    """One `Trainer.fit` over the case's data (validation: 8 training examples)."""
    spec = tailor_spec(case, data, model_dir)
    recipe = TextRecipe(model_dir, case.seq)
    device = torch.device("cuda" if gpu() else "cpu")
    world = World(rank=0, local_rank=0, size=1, device=device)
    ckpt_dir = Path(tempfile.mkdtemp(prefix="ckpt-", dir=work))
    trainer = BenchTrainer(world, spec, recipe, LABELS,
                           Checkpointer(Store(), str(ckpt_dir / "ckpt"), ckpt_dir, 2), None,
                           lambda step, values: None)
    trainer.compile_choice = compiled
    return trainer.fit(Shard(data.token_ids, data.labels),
                       Shard(data.token_ids[:8], data.labels[:8]), StopSignal())


def tailor(case: Case, data: Data, model_dir: Path, work: Path, compiled: bool,
           windows: int) -> dict[str, float]:
    """Steady-state samples/s (best of `windows` spans after the warm-up mark)."""
    started = time.monotonic()
    if case.texts and compiled:
        # Varying lengths: a first run compiles the graphs; the measured run (same seed, so
        # the same batches) reuses them, as the later epochs of a long run would.
        fit = tailor_fit(case, data, model_dir, work, compiled)
        print(f"tailor {case.name} compiled, first run: {len(fit.timeline)} marks", flush=True)
    torch._dynamo.utils.counters.clear()
    result = tailor_fit(case, data, model_dir, work, compiled)
    marks = [(s, t) for s, t in result.timeline if s >= data.warm]
    counters = torch._dynamo.utils.counters
    row = {"samples_per_s": best_window(marks, case.batch, windows),
           "seconds": time.monotonic() - started}
    # Each row as soon as it is measured: a run stopped at a time limit keeps what it measured.
    print(f"tailor {case.name} {'compiled' if compiled else 'eager'}: compiled graphs "
          f"{counters['stats'].get('unique_graphs', 0)}, graph breaks "
          f"{sum(counters['graph_break'].values())}; {row['samples_per_s']:.1f} samples/s, "
          f"{row['seconds']:.1f} s", flush=True)
    return row


@dataclass(frozen=True)
class HFConfig:
    """One setting of the HF Trainer's speed options (defaults: transformers' own)."""

    compile: bool = False
    nan_filter: bool = True  # logging_nan_inf_filter: an isnan/isinf check (a sync) every step
    pad8: bool = False  # DataCollatorWithPadding(pad_to_multiple_of=8)
    workers: int = 0  # dataloader_num_workers
    group: bool = False  # train_sampling_strategy="group_by_length"
    padded: bool = False  # every input padded to the case's length: static shapes

    def label(self) -> str:
        parts = [name for name, on in (("padded to max length", self.padded),
                                       ("torch_compile", self.compile),
                                       ("logging_nan_inf_filter=False", not self.nan_filter),
                                       ("pad_to_multiple_of=8", self.pad8),
                                       (f"{self.workers} dataloader workers", self.workers),
                                       ("group_by_length", self.group)) if on]
        return ", ".join(parts) or "transformers defaults"

    def union(self, other: HFConfig) -> HFConfig:
        return HFConfig(self.compile or other.compile, self.nan_filter and other.nan_filter,
                        self.pad8 or other.pad8, max(self.workers, other.workers),
                        self.group or other.group, self.padded or other.padded)


def hf_singles(case: Case) -> list[HFConfig]:
    """Each option alone on top of the defaults (the ones that help are then combined)."""
    workers = max(1, min(4, (os.cpu_count() or 2) // 2))
    singles = [HFConfig(nan_filter=False), HFConfig(pad8=True), HFConfig(workers=workers)]
    if case.texts:
        singles += [HFConfig(group=True), HFConfig(padded=True)]
    return singles


def hf_arguments(config: HFConfig, case: Case, steps: int, work: Path) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="hf-", dir=work), max_steps=steps,
        per_device_train_batch_size=case.batch, learning_rate=5e-5, report_to=[],
        save_strategy="no", logging_strategy="no", disable_tqdm=True, bf16=gpu(),
        torch_compile=config.compile, logging_nan_inf_filter=config.nan_filter,
        dataloader_num_workers=config.workers, dataloader_pin_memory=gpu(),
        optim="adamw_torch_fused",
        train_sampling_strategy="group_by_length" if config.group else "random")


def hf_trainer(config: HFConfig, case: Case, data: Data, model_dir: Path, work: Path,
               callbacks: list[Any]) -> Any:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
    )
    from transformers import Trainer as HFTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    rows = []
    for ids, label in zip(data.token_ids, data.labels, strict=True):
        pad = case.seq - len(ids) if config.padded else 0
        rows.append({"input_ids": ids + [tokenizer.pad_token_id] * pad,
                     "attention_mask": [1] * len(ids) + [0] * pad, "labels": label})
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir),
                                                               num_labels=LABELS)
    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if config.pad8 else None)
    return HFTrainer(model=model, args=hf_arguments(config, case, data.steps, work),
                     train_dataset=rows, data_collator=collator, processing_class=tokenizer,
                     callbacks=callbacks)


def hf(config: HFConfig, case: Case, data: Data, model_dir: Path, work: Path,
       windows: int) -> dict[str, float]:
    """Steady-state samples/s; the GPU is synchronised only at the window edges."""
    from transformers import TrainerCallback

    span = data.steps - data.warm
    edges = {data.warm + round(i * span / windows) for i in range(windows + 1)}
    marks: list[tuple[int, float]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step in edges:
                sync()
                marks.append((state.global_step, time.monotonic()))

    started = time.monotonic()
    torch._dynamo.reset()
    hf_trainer(config, case, data, model_dir, work, [Clock()]).train()
    row = {"samples_per_s": best_window(marks, case.batch, windows),
           "seconds": time.monotonic() - started}
    print(f"hf {case.name} {config.label()}: {row['samples_per_s']:.1f} samples/s, "
          f"{row['seconds']:.1f} s", flush=True)
    return row


def hf_config_json(config: HFConfig) -> str:
    import json

    return json.dumps(dataclasses.asdict(config))


def hf_config_from_json(text: str) -> HFConfig:
    import json

    return HFConfig(**json.loads(text))
