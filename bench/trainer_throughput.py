"""Tailor's text recipe against the Hugging Face Trainer at its measured best, in one run.

Same model, data, batch, length and step count on both sides; ratios printed. Parts:
- steady state (the long fine-tune): samples/s after a warm-up mark (after compilation), best
  of `--windows` equal spans of the measured steps (BBC News: the whole span, since its batch
  lengths vary), the GPU synchronised only at span edges. Cases: `minilm` (all-MiniLM-L6-v2,
  random tokens), `bert-base` (BERT-base, random tokens), `bbc` (MiniLM on BBC News, two
  epochs; Tailor compiled trains twice with the same seed and the second run is measured).
  The HF Trainer runs with transformers' defaults, then each speed option alone
  (`logging_nan_inf_filter=False`, `pad_to_multiple_of=8`, dataloader workers, and for BBC
  `group_by_length` and padding to max length), then the options that helped combined, then
  that with `torch_compile` (BBC: also padded to max length with `torch_compile`, static
  shapes). Fused AdamW is transformers' default optimizer; bf16 and pinned memory on a GPU.
  The ratio is against the best HF row. Tailor runs eager and compiled (the shipped trainer
  compiles on a GPU and runs eager on a CPU; the other is forced for the comparison). Order:
  Tailor eager, the HF rows, Tailor compiled, then the best HF row and Tailor eager again
  (each keeps its better run), so a change of load on a shared machine hits both sides.
- end to end (the short fine-tune, `bbc-epoch`: one epoch of BBC News): seconds from process
  start to the end of the last step, each side in a fresh process (`trainer_e2e.py`), with the
  HF Trainer's best eager and best compiled settings from the `bbc` rows, and Tailor's compile
  cache cold, warm and loaded from a Mega-Cache file.

Every row of a GPU machine (all cases, full sizes, bf16, 3 end-to-end rounds):

    python bench/trainer_throughput.py --gpu-all --out results.md

or part by part, each in its own process (`bench/gpu_run.sh`; the short fine-tune reads the
`bbc` case's best HF settings from the file the `bbc` part wrote):

    python bench/trainer_throughput.py --cases bbc --e2e-repeats 0 --hf-best best.json
    python bench/trainer_throughput.py --cases bbc-epoch --hf-best best.json [--e2e-quick]

CPU (shrunk sizes, fp32; BERT-base left out by default, add it with --cases):

    python bench/trainer_throughput.py --small [--cases minilm,bbc,bert-base]
        [--e2e-repeats 1] [--e2e-quick] [--windows 3] [--threads 1] [--out results.md]

The checkpoint stall has its own bench: `bench/checkpoint_stall.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
import transformers
from trainer_cases import (
    Case,
    bbc_dir,
    cases,
    gpu,
    make_data,
    minilm_dir,
    model_dir,
    set_threads,
)
from trainer_e2e import end_to_end
from trainer_sides import (
    HFConfig,
    hf,
    hf_config_from_json,
    hf_config_json,
    hf_singles,
    tailor,
)

Row = dict[str, float]


def hf_rows(case: Case, run: Callable[[HFConfig], Row]) -> dict[HFConfig, Row]:
    """Defaults, each option alone, the helpful ones combined, and that compiled."""
    rows = {HFConfig(): run(HFConfig())}
    base = rows[HFConfig()]["samples_per_s"]
    combined = HFConfig()
    for single in hf_singles(case):
        rows[single] = run(single)
        if rows[single]["samples_per_s"] > base:
            combined = combined.union(single)
    if combined not in rows:
        rows[combined] = run(combined)
    compiled = combined.union(HFConfig(compile=True))
    rows[compiled] = run(compiled)
    if case.texts and not compiled.padded:
        static = HFConfig(True, compiled.nan_filter, compiled.pad8, compiled.workers, False, True)
        rows[static] = run(static)
    return rows


def run_case(case: Case, args: argparse.Namespace, work: Path,
             emit: Callable[[str], None]) -> dict[HFConfig, Row]:
    from transformers import AutoTokenizer

    directory = model_dir(case.arch, args.minilm, work)
    data = make_data(case, AutoTokenizer.from_pretrained(str(directory)), args.bbc)
    windows = 1 if case.texts else args.windows
    shipped = "compiled" if gpu() else "eager"
    names = {mode: f"Tailor {mode}{' (shipped default)' if mode == shipped else ''}"
             for mode in ("eager", "compiled")}
    # Interleaved against drifting load: Tailor eager, the HF rows, Tailor compiled, then the
    # best HF row and Tailor eager once more; each keeps its better run.
    tailors = {names["eager"]: tailor(case, data, directory, work, False, windows)}
    hf_results = hf_rows(case, lambda c: hf(c, case, data, directory, work, windows))
    tailors[names["compiled"]] = tailor(case, data, directory, work, True, windows)
    best_config = max(hf_results, key=lambda c: hf_results[c]["samples_per_s"])
    again = hf(best_config, case, data, directory, work, windows)
    hf_results[best_config] = max(hf_results[best_config], again,
                                  key=lambda r: r["samples_per_s"])
    again = tailor(case, data, directory, work, False, windows)
    tailors[names["eager"]] = max(tailors[names["eager"]], again,
                                  key=lambda r: r["samples_per_s"])
    best_config = max(hf_results, key=lambda c: hf_results[c]["samples_per_s"])
    best = hf_results[best_config]["samples_per_s"]
    emit(f"## {case.name}: {case.arch}, batch {case.batch}, "
         f"{'BBC News, at most' if case.texts else 'random tokens,'} {case.seq} tokens, "
         f"{data.steps} steps, measured after step {data.warm}"
         f"{', whole span' if windows == 1 else f', best of {windows} spans'}")
    emit("| trainer | samples/s | in-process wall s (model build, compile incl.) | "
         "this / best HF |")
    emit("|---|---|---|---|")
    for config, row in hf_results.items():
        mark = " **(best HF)**" if config == best_config else ""
        emit(f"| HF Trainer, {config.label()}{mark} | {row['samples_per_s']:.1f} | "
             f"{row['seconds']:.1f} | {row['samples_per_s'] / best:.2f}x |")
    for name, row in tailors.items():
        emit(f"| {name} | {row['samples_per_s']:.1f} | {row['seconds']:.1f} | "
             f"**{row['samples_per_s'] / best:.2f}x** |")
    return hf_results


def best_pair(results: dict[HFConfig, Row]) -> tuple[HFConfig, HFConfig]:
    """The HF Trainer's best eager and best compiled settings of the `bbc` rows."""
    def pick(compiled: bool) -> HFConfig:
        options = [c for c in results if c.compile == compiled]
        return max(options, key=lambda c: results[c]["samples_per_s"])

    return pick(False), pick(True)


def short_case(pair: tuple[HFConfig, HFConfig], args: argparse.Namespace, work: Path,
               emit: Callable[[str], None]) -> None:
    eager, compiled = pair
    case = cases(args.small)["bbc-epoch"]
    emit(f"## bbc-epoch (the short fine-tune): MiniLM, one epoch of "
         f"{case.examples or 'all'} BBC News articles, batch {case.batch}, at most {case.seq} "
         f"tokens; end to end = process start to the end of the last step")
    end_to_end(hf_config_json(eager), hf_config_json(compiled),
               (eager.label(), compiled.label()), args.e2e_repeats, args.small, work,
               args.e2e_log, emit, args.e2e_quick)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_all(names: list[str], args: argparse.Namespace, emit: Callable[[str], None]) -> None:
    """The steady-state cases in order, then the short fine-tune if asked for."""
    device = (torch.cuda.get_device_name() if gpu()
              else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)")
    emit(f"# {device}; torch {torch.__version__}, transformers {transformers.__version__}, "
         f"Python {platform.python_version()}; {'bf16 autocast' if gpu() else 'fp32'}; "
         f"load average at start {load_average()}")
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")
        pair = None
        for name in (n for n in names if n != "bbc-epoch"):
            started = time.monotonic()
            results = run_case(cases(args.small)[name], args, Path(tmp), emit)
            if name == "bbc":
                pair = best_pair(results)
                if args.hf_best:
                    args.hf_best.write_text(json.dumps([hf_config_json(c) for c in pair]))
            emit(f"({name} took {time.monotonic() - started:.0f} s)\n")
        if pair is None and "bbc-epoch" in names and args.hf_best:
            eager, compiled = json.loads(args.hf_best.read_text())
            pair = (hf_config_from_json(eager), hf_config_from_json(compiled))
        if pair is not None and args.e2e_repeats > 0:
            started = time.monotonic()
            short_case(pair, args, Path(tmp), emit)
            emit(f"(bbc-epoch took {time.monotonic() - started:.0f} s)\n")
    emit(f"load average at end {load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="shrunk cases for a CPU")
    parser.add_argument("--gpu-all", action="store_true",
                        help="every case at full size, 3 end-to-end rounds")
    parser.add_argument("--cases", help="default: minilm,bbc,bert-base (--small: minilm,bbc)")
    parser.add_argument("--e2e-repeats", type=int, default=1, help="0: no end-to-end rows")
    parser.add_argument("--e2e-quick", action="store_true",
                        help="end to end without the warm-directory rows (Mega-Cache kept)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads, every side (default: 1 with --small, else torch's)")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also append the results to this file")
    parser.add_argument("--e2e-log", type=Path,
                        default=Path(tempfile.gettempdir()) / "trainer-e2e-children.log",
                        help="where the end-to-end child processes' output goes")
    parser.add_argument("--minilm", type=Path, default=None)
    parser.add_argument("--bbc", type=Path, default=None)
    parser.add_argument("--hf-best", type=Path,
                        help="the `bbc` case writes its best HF settings here; a run whose "
                             "--cases has `bbc-epoch` but not `bbc` reads them from here")
    args = parser.parse_args()
    if args.gpu_all:
        args.small, args.e2e_repeats = False, max(args.e2e_repeats, 3)
    set_threads(args.threads if args.threads is not None else int(args.small))
    args.minilm = args.minilm or minilm_dir()
    args.bbc = args.bbc or bbc_dir()
    names = (args.cases or ("minilm,bbc" if args.small else "minilm,bbc,bert-base")).split(",")
    if "bbc-epoch" in names and "bbc" not in names and not (args.hf_best and
                                                           args.hf_best.exists()):
        parser.error("bbc-epoch without bbc needs --hf-best from an earlier bbc run")

    def emit(line: str) -> None:
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as handle:
                handle.write(line + "\n")

    run_all(names, args, emit)


if __name__ == "__main__":
    main()
