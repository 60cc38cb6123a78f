"""Detection quality of drift monitors: true- and false-positive rates on shifts of known size.

Every seed draws one reference (REFERENCE_ROWS rows: ``x`` standard normal, ``c`` one of four
categories at 40/30/20/10%) and, for every scenario and window size, one window from the
scenario's truth. Each tool gets the same reference and windows and says whether the window
drifted; the rate over seeds is its true-positive rate (a shift) or false-positive rate (none).

Seeds per cell (defaults): 100 for Tailor ``auto`` and the old ``auto``, 40 with ``calibrate``
(a bootstrap per check), 25 for Evidently (~0.5 s a report), 60 for NannyML.

Sides (the exact configuration is printed at the start of a run):

- Tailor ``auto`` (the default): KS / chi-square at the stated per-check rate with an effect
  floor; Tailor ``auto`` with ``calibrate``; and the old ``auto`` (before issue 18), emulated
  with explicit methods: ``ks`` (Bonferroni, family 0.05) below 1,000 rows, ``psi`` at 0.25 above.
- Evidently at its defaults: ``DataDriftPreset()``, dataset drift when at least half the columns
  drift (its default drift share).
- NannyML at its defaults: ``UnivariateDriftCalculator(column_names=[x, c])`` (Jensen-Shannon,
  10 chunks, thresholds at mean + 3 sd of the reference chunks); the window drifted when any
  chunk of at least half the columns alerts (with two columns: any column).

With two columns and every tool's drifted share of one half, one drifted column is a drifted
window for all of them. The peers run in their own venv (bench/drift_scale.py's), in a
subprocess that draws the same data from the same seeds with this file's generator.

    ~/.cache/tailor/venv/bin/python bench/drift_quality.py            # ~10 min on 2 shared vCPUs
    ~/.cache/tailor/venv/bin/python bench/drift_quality.py --seeds 3 --calibrate-seeds 2 \
        --peer-seeds 2 --nannyml-seeds 2                                # smoke, ~1 min
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REFERENCE_ROWS = 5000
SIZES = (500, 5000, 50000)
CATEGORIES = np.array(["a", "b", "c", "d"])
MIX = (0.4, 0.3, 0.2, 0.1)
SHIFTED_MIX = (0.25, 0.3, 0.2, 0.25)
SCENARIOS: dict[str, tuple[float, float, tuple[float, ...]]] = {
    # name: (mean shift of x in sd, variance factor of x, category mix of c)
    "none": (0.0, 1.0, MIX),
    "mean +0.1 sd": (0.1, 1.0, MIX),
    "mean +0.25 sd": (0.25, 1.0, MIX),
    "mean +0.5 sd": (0.5, 1.0, MIX),
    "variance x1.5": (0.0, 1.5, MIX),
    "category mix": (0.0, 1.0, SHIFTED_MIX),
}
Columns = dict[str, np.ndarray]


def reference(seed: int) -> Columns:
    rng = np.random.default_rng([seed, 0])
    return {"x": rng.standard_normal(REFERENCE_ROWS),
            "c": rng.choice(CATEGORIES, REFERENCE_ROWS, p=MIX)}


def window(seed: int, scenario: str, rows: int) -> Columns:
    shift, variance, mix = SCENARIOS[scenario]
    rng = np.random.default_rng([seed, 1, rows, list(SCENARIOS).index(scenario)])
    return {"x": shift + np.sqrt(variance) * rng.standard_normal(rows),
            "c": rng.choice(CATEGORIES, rows, p=mix)}


def true_effects(scenario: str) -> str:
    """The population effect sizes the floors are about (normalised Wasserstein of x, from
    quantiles; Jensen-Shannon distance of c in bits)."""
    shift, variance, mix = SCENARIOS[scenario]
    u = (np.arange(20000) + 0.5) / 20000
    from statistics import NormalDist
    z = np.array([NormalDist().inv_cdf(p) for p in u])
    w = float(np.mean(np.abs(shift + np.sqrt(variance) * z - z)))
    p, q = np.array(MIX), np.array(mix)
    m = (p + q) / 2
    js = float(np.sqrt((np.sum(p * np.log2(p / m)) + np.sum(q * np.log2(q / m))) / 2))
    return f"W(x)={w:.3f} sd, JS(c)={js:.3f}"


def rates(flagged: Callable[[int, str, int], bool], seeds: int) -> dict[str, dict[str, float]]:
    """Share of seeds whose window each (scenario, size) flags, seeds in the outer loop so the
    reference is built once per seed by ``flagged``'s cache."""
    hits = {s: dict.fromkeys(map(str, SIZES), 0) for s in SCENARIOS}
    for seed in range(seeds):
        for scenario in SCENARIOS:
            for rows in SIZES:
                hits[scenario][str(rows)] += bool(flagged(seed, scenario, rows))
    return {s: {k: v / seeds for k, v in row.items()} for s, row in hits.items()}


# ---------------------------------------------------------------- Tailor (the project venv)

def tailor_sides(seeds: dict[str, int]) -> dict[str, dict[str, object]]:
    import pyarrow as pa
    from tailor.drift import CheckSettings, WindowAccumulator, build_reference_profile, evaluate

    profiles: dict[int, object] = {}

    def profile(seed: int):  # type: ignore[no-untyped-def]
        if seed not in profiles:
            profiles.clear()
            ref = reference(seed)
            profiles[seed] = build_reference_profile(ref, ["p"] * REFERENCE_ROWS, classes=["p"])
        return profiles[seed]

    def side(settings_for: Callable[[int], CheckSettings]) -> Callable[[int, str, int], bool]:
        def flagged(seed: int, scenario: str, rows: int) -> bool:
            p = profile(seed)
            acc = WindowAccumulator.for_profile(p)  # type: ignore[arg-type]
            acc.update(pa.table(window(seed, scenario, rows)))
            return evaluate(p, acc, settings_for(rows)).drift_detected  # type: ignore[arg-type]
        return flagged

    auto, calibrated = CheckSettings(), CheckSettings(calibrate=True)
    ks, psi = CheckSettings(feature_method="ks"), CheckSettings(feature_method="psi")
    runs = {
        "tailor auto": (side(lambda rows: auto), "CheckSettings() (auto)"),
        "tailor auto+calibrate": (side(lambda rows: calibrated), "CheckSettings(calibrate=True)"),
        "tailor old auto": (side(lambda rows: ks if rows < 1000 else psi),
                            "feature_method='ks' below 1,000 rows, 'psi' (0.25) above"),
    }
    out: dict[str, dict[str, object]] = {}
    for name, (flagged, config) in runs.items():
        t0 = time.perf_counter()
        out[name] = {"config": config, "seeds": seeds[name], "rates": rates(flagged, seeds[name]),
                     "seconds": time.perf_counter() - t0}
        print(f"  {name}: {out[name]['seconds']:.0f} s", flush=True)
    return out


# ---------------------------------------------------------------- peers (their own venv)

def evidently_flagged() -> Callable[[int, str, int], bool]:
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    def flagged(seed: int, scenario: str, rows: int) -> bool:
        ref, cur = pd.DataFrame(reference(seed)), pd.DataFrame(window(seed, scenario, rows))
        out = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref).dict()
        drifted = columns = 0
        for metric in out["metrics"]:
            config = metric["config"]
            if config["type"].endswith(":ValueDrift"):
                value, threshold = float(metric["value"]), float(config["threshold"])
                test = "p_value" in config["method"]
                columns += 1
                drifted += (value < threshold) if test else (value >= threshold)
        return columns > 0 and drifted / columns >= 0.5
    return flagged


def nannyml_flagged() -> Callable[[int, str, int], bool]:
    import nannyml as nml
    import pandas as pd

    fitted: dict[int, object] = {}

    def flagged(seed: int, scenario: str, rows: int) -> bool:
        if seed not in fitted:
            fitted.clear()
            calc = nml.UnivariateDriftCalculator(column_names=["x", "c"])
            fitted[seed] = calc.fit(pd.DataFrame(reference(seed)))
        res = fitted[seed].calculate(pd.DataFrame(window(seed, scenario, rows)))  # type: ignore[attr-defined]
        frame = res.filter(period="analysis").to_df()
        alerts = [c for c in frame.columns if c[-1] == "alert"]
        drifted = sum(bool(frame[c].any()) for c in alerts)
        return bool(alerts) and drifted / len(alerts) >= 0.5
    return flagged


def peer_main(tool: str, seeds: int) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)
    flagged = evidently_flagged() if tool == "evidently" else nannyml_flagged()
    t0 = time.perf_counter()
    table = rates(flagged, seeds)
    print(json.dumps({"rates": table, "seconds": time.perf_counter() - t0}))


PEER_CONFIG = {
    "evidently default": "Report([DataDriftPreset()]) (defaults: <=1,000 rows KS p<0.05 / "
    "chi-square p<0.05, >1,000 rows normed Wasserstein >=0.1 / Jensen-Shannon >=0.1; dataset "
    "drift at drift share 0.5)",
    "nannyml default": "UnivariateDriftCalculator(column_names=['x','c']) (defaults: "
    "jensen_shannon for both, 10 chunks, alert above mean + 3 sd of the reference chunks; "
    "window drifted when any chunk of >=half the columns alerts)",
}


def run_peer(python: str, tool: str, seeds: int, timeout: float) -> dict[str, object]:
    cmd = [python, __file__, "--peer", tool, "--peer-seeds", str(seeds)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------- report

def table(results: dict[str, dict[str, object]]) -> list[str]:
    """Markdown: one row per scenario and tool, the flagged share per window size."""
    head = "| scenario | true effect | tool | seeds | " + " | ".join(
        f"{n:,} rows" for n in SIZES) + " |"
    lines = [head, "|" + "---|" * (4 + len(SIZES))]
    for scenario in SCENARIOS:
        kind = "FPR" if scenario == "none" else "TPR"
        for tool, res in results.items():
            if "rates" not in res:
                cells = [str(res.get("error", "?"))] * len(SIZES)
            else:
                row = res["rates"][scenario]  # type: ignore[index]
                cells = [f"{kind} {100 * row[str(n)]:.0f}%" for n in SIZES]
            lines.append(f"| {scenario} | {true_effects(scenario)} | {tool} | "
                         f"{res.get('seeds', '?')} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100, help="seeds per cell, Tailor auto")
    parser.add_argument("--calibrate-seeds", type=int, default=40)
    parser.add_argument("--peer-seeds", type=int, default=25, help="seeds per cell, Evidently")
    parser.add_argument("--nannyml-seeds", type=int, default=60)
    parser.add_argument("--peer", choices=["evidently", "nannyml"], help=argparse.SUPPRESS)
    parser.add_argument("--peer-timeout", type=float, default=420.0)
    args = parser.parse_args()
    if args.peer:
        peer_main(args.peer, args.peer_seeds)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from drift_scale import ensure_peer_venv
    from tailor.drift.result import CHECK_FALSE_ALARM_RATE, EFFECT_FLOORS

    python = ensure_peer_venv()
    code = "import evidently, nannyml, pandas, numpy, scipy; print(evidently.__version__, " \
           "nannyml.__version__, pandas.__version__, numpy.__version__, scipy.__version__)"
    peer_versions = subprocess.run([python, "-c", code], capture_output=True, text=True,
                                   check=False).stdout.strip()
    import scipy

    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs; "
          f"load average before: {Path('/proc/loadavg').read_text().strip()}")
    print(f"tailor side: python {platform.python_version()}, numpy {np.__version__}, "
          f"scipy {scipy.__version__}")
    print(f"peer side (evidently nannyml pandas numpy scipy): {peer_versions}")
    print(f"reference: {REFERENCE_ROWS} rows per seed (x ~ N(0,1), c in {CATEGORIES.tolist()} at "
          f"{MIX}); windows: {SIZES}; category-mix scenario: {SHIFTED_MIX}")
    print(f"tailor auto: stated false-alarm rate per check {CHECK_FALSE_ALARM_RATE:.3f}; "
          f"effect floors {EFFECT_FLOORS}")
    seeds = {"tailor auto": args.seeds, "tailor auto+calibrate": args.calibrate_seeds,
             "tailor old auto": args.seeds}
    results: dict[str, dict[str, object]] = {}
    t0 = time.perf_counter()
    for tool in ("evidently", "nannyml"):
        name = f"{tool} default"
        print(f"  {name}: {PEER_CONFIG[name]}", flush=True)
        n = args.peer_seeds if tool == "evidently" else args.nannyml_seeds
        res = run_peer(python, tool, n, args.peer_timeout)
        results[name] = {"config": PEER_CONFIG[name], "seeds": n, **res}
        print(f"  {name}: {float(res.get('seconds', 0)):.0f} s {res.get('error', '')}", flush=True)
    results = {**tailor_sides(seeds), **results}
    for name, res in results.items():
        print(f"config {name}: {res['config']}")
    print("\n".join(table(results)))
    print(f"total {time.perf_counter() - t0:.0f} s; load average after: "
          f"{Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
