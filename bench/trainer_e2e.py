"""End-to-end wall time of a short fine-tune (one epoch of BBC News), each side in a fresh process.

The parent takes the time (CLOCK_MONOTONIC, shared by every process on the machine) just before
it starts a child; the child (this file with `--side`) imports torch and transformers, reads and
tokenizes the articles, builds the model, trains one epoch and prints the time its last step
ended (the GPU synchronised). End-to-end = that time minus the start: interpreter start,
imports, tokenizing, model build and compilation included, the same for both sides.

Compile caches (Tailor compiled, and the HF Trainer with `torch_compile`): `cold` starts with an
empty TORCHINDUCTOR_CACHE_DIR; `warm` reuses the directory a cold run filled (inductor's FX
graph and AOTAutograd caches, on by default); `mega-cache` starts with an empty directory but
loads the artifacts a cold run saved with `torch.compiler.save_cache_artifacts` (what a trainer
image could ship or fetch from S3 before it starts).

    python bench/trainer_e2e.py --side tailor|hf [--compiled] [--hf-config JSON] [--small]
        [--load-cache FILE] [--save-cache FILE]     (one child; the bench starts these)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MARK = "E2E_LAST_STEP"


@dataclass
class Side:
    name: str
    args: list[str]
    cache: str = ""  # "", "cold", "warm" or "mega-cache"


def child(args: argparse.Namespace) -> None:
    import torch
    from trainer_cases import bbc_dir, cases, make_data, minilm_dir, sync
    from trainer_sides import hf_config_from_json, hf_trainer, tailor_fit
    from transformers import AutoTokenizer

    if args.load_cache:
        torch.compiler.load_cache_artifacts(Path(args.load_cache).read_bytes())
    case = cases(args.small)["bbc-epoch"]
    model = minilm_dir()
    data = make_data(case, AutoTokenizer.from_pretrained(str(model)), bbc_dir())
    work = Path(tempfile.mkdtemp(prefix="e2e-"))
    if args.side == "tailor":
        result = tailor_fit(case, data, model, work, args.compiled)
        last_step, last = result.timeline[-1]
    else:
        from transformers import TrainerCallback

        ends: list[tuple[int, float]] = []

        class Clock(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if state.global_step == data.steps:
                    sync()
                    ends.append((state.global_step, time.monotonic()))

        hf_trainer(hf_config_from_json(args.hf_config), case, data, model, work,
                   [Clock()]).train()
        last_step, last = ends[-1]
    if args.save_cache:
        saved = torch.compiler.save_cache_artifacts()
        if saved is not None:
            Path(args.save_cache).write_bytes(saved[0])
    print(f"{MARK} {last:.6f} {last_step}", flush=True)


def run_child(side: Side, small: bool, env: dict[str, str], log: Path) -> tuple[float, int]:
    """(seconds from process start to the end of the last step, steps)."""
    command = [sys.executable, str(HERE / "trainer_e2e.py"), *side.args]
    if small:
        command.append("--small")
    started = time.monotonic()
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=1800, check=False)
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr[-4000:]}\n")
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{side.name}: exit {done.returncode}: {done.stderr[-2000:]}")
    _, last, steps = lines[-1].split()
    return float(last) - started, int(steps)


def rounds(sides: list[Side], repeats: int, small: bool, work: Path,
           log: Path) -> dict[str, list[float]]:
    """Every side `repeats` times, alternating; a cache side uses its round's cold run's cache."""
    times: dict[str, list[float]] = {s.name: [] for s in sides}
    for r in range(repeats):
        cold_dir: dict[str, Path] = {}
        for side in sides:
            key = side.name.split(",")[0]  # "Tailor compiled" / "HF Trainer ..."
            cache_dir = Path(tempfile.mkdtemp(prefix=f"inductor-{r}-", dir=work))
            extra: list[str] = []
            mega = work / f"mega-{r}-{key.replace(' ', '_')}.bin"
            if side.cache == "cold":
                cold_dir[key] = cache_dir
                extra = ["--save-cache", str(mega)]
            elif side.cache == "warm":
                cache_dir = cold_dir[key]
            elif side.cache == "mega-cache":
                extra = ["--load-cache", str(mega)]
            seconds, steps = run_child(Side(side.name, side.args + extra), small,
                                       {"TORCHINDUCTOR_CACHE_DIR": str(cache_dir)}, log)
            times[side.name].append(seconds)
            print(f"e2e round {r + 1}: {side.name}: {seconds:.1f} s ({steps} steps)", flush=True)
    return times


def end_to_end(hf_eager: str, hf_compiled: str, hf_labels: tuple[str, str], repeats: int,
               small: bool, work: Path, log: Path, emit: Callable[[str], None],
               quick: bool = False) -> None:
    """The short fine-tune's table: best-of-`repeats` (and median) seconds per side."""
    sides = [
        Side(f"HF Trainer, {hf_labels[0]}", ["--side", "hf", "--hf-config", hf_eager]),
        Side("Tailor eager", ["--side", "tailor"]),
        Side(f"HF Trainer, {hf_labels[1]}, cold cache",
             ["--side", "hf", "--hf-config", hf_compiled], "cold"),
        Side(f"HF Trainer, {hf_labels[1]}, warm cache",
             ["--side", "hf", "--hf-config", hf_compiled], "warm"),
        Side("Tailor compiled, cold cache", ["--side", "tailor", "--compiled"], "cold"),
        Side("Tailor compiled, warm cache", ["--side", "tailor", "--compiled"], "warm"),
        Side("Tailor compiled, mega-cache", ["--side", "tailor", "--compiled"], "mega-cache"),
    ]
    if quick:
        sides = [s for s in sides if s.cache != "warm"]
    times = rounds(sides, repeats, small, work, log)
    best = {k: min(v) for k, v in times.items()}
    hf_best = min(v for k, v in best.items() if k.startswith("HF"))
    emit(f"| side (fresh process each; best of {repeats}) | end-to-end s | median s | "
         "best HF / this |")
    emit("|---|---|---|---|")
    for name, values in times.items():
        emit(f"| {name} | {best[name]:.1f} | {statistics.median(values):.1f} | "
             f"{hf_best / best[name]:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", choices=["tailor", "hf"], required=True)
    parser.add_argument("--compiled", action="store_true")
    parser.add_argument("--hf-config", default="{}")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--load-cache")
    parser.add_argument("--save-cache")
    child(parser.parse_args())


if __name__ == "__main__":
    main()
