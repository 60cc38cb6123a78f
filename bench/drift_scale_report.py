"""Measurements of bench/drift_scale.py and how they are compared: best-of-N, the ratio table,
the drifted-column agreement check and part B's ratio to the read ceiling."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field

TARGETS = {"nannyml": 5.0, "evidently": 50.0}
"""Speed targets: Tailor at least this many times faster than each peer (in-process time)."""
MEMORY_TARGET = 5.0
"""Tailor's peak memory at most 1/5 of Evidently's."""
OLD_RATIOS = {
    "nannyml": "6.7x wall, 5.2x in-process",
    "evidently": "100.8x wall, 127.8x in-process",
}
"""bench/RESULTS.md before issue 18 (idle machine, 2026-11-26): NannyML at its 10 chunks best
of 2, Evidently's default once, against Tailor's `auto` (PSI)."""


@dataclass
class Measure:
    name: str
    seconds: float | None
    peak_mib: float | None
    detail: dict[str, float]
    error: str | None = None
    info: dict[str, object] = field(default_factory=dict)
    """What the child decided (``drifted``, ``methods``, ``chunks``): not times."""

    @property
    def inner(self) -> float:
        """In-process time: the child's own phases (no interpreter start or imports)."""
        return sum(self.detail.values())

    def __str__(self) -> str:
        if self.seconds is None or self.peak_mib is None:
            return f"{self.name}: {self.error}"
        phases = ", ".join(f"{k} {v:.2f}" for k, v in self.detail.items())
        drifted = self.info.get("drifted")
        found = f"; drifted {len(drifted)}" if isinstance(drifted, list) else ""
        return (f"{self.name}: wall {self.seconds:.2f} s, in-process {self.inner:.2f} s "
                f"({phases}), peak {self.peak_mib:,.0f} MiB{found}")


def run_child(name: str, python: str, code: str, timeout: float, env: dict[str, str]) -> Measure:
    """Run ``code`` in a fresh interpreter; the wall time comes from the parent, the peak
    memory from the child's last line (RUSAGE_CHILDREN would aggregate every child)."""
    started = time.perf_counter()
    proc = subprocess.Popen([python, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return Measure(name, None, None, {}, f"did not finish within {timeout:.0f} s")
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (err or out).strip().splitlines()[-3:]
        return Measure(name, None, None, {}, f"exit {proc.returncode}: {' | '.join(tail)}")
    report = json.loads(out.strip().splitlines()[-1])
    peak = float(report.pop("peak_mib"))
    detail = {k: float(v) for k, v in report.items() if isinstance(v, float)}
    info = {k: v for k, v in report.items() if k not in detail}
    return Measure(name, seconds, peak, detail, info=info)


def best_of(runs: list[Measure]) -> Measure:
    """The run with the least in-process time (the machine is shared: noise only adds)."""
    done = [m for m in runs if m.seconds is not None]
    return min(done, key=lambda m: m.inner) if done else runs[0]


def table(measures: list[Measure], title: str) -> list[str]:
    lines = [f"| {title} | wall s | in-process s | peak MiB | phases (s) |",
             "|---|---|---|---|---|"]
    for m in measures:
        if m.seconds is None or m.peak_mib is None:
            lines.append(f"| {m.name} | — | — | — | {m.error} |")
            continue
        phases = ", ".join(f"{k} {v:.2f}" for k, v in m.detail.items())
        lines.append(f"| {m.name} | {m.seconds:.2f} | {m.inner:.2f} | {m.peak_mib:,.0f} | "
                     f"{phases} |")
    return lines


def agreement(best: dict[str, Measure], expected: set[str]) -> list[str]:
    """Each side's drifted columns against the columns the data shifted, mismatches flagged."""
    lines = [f"expected drifted ({len(expected)}): {', '.join(sorted(expected))}"]
    mismatches = 0
    for key, m in best.items():
        drifted = m.info.get("drifted")
        if not isinstance(drifted, list):
            lines.append(f"  {key:22} no result ({m.error})")
            mismatches += 1
            continue
        found = {str(c) for c in drifted}
        missed, extra = sorted(expected - found), sorted(found - expected)
        verdict = "agrees" if not missed and not extra else "MISMATCH"
        mismatches += verdict != "agrees"
        lines.append(f"  {key:22} {len(found):2} drifted: {', '.join(sorted(found)) or '-'}"
                     f"  [{verdict}{'; missed ' + ', '.join(missed) if missed else ''}"
                     f"{'; extra ' + ', '.join(extra) if extra else ''}]")
        scores = m.info.get("scores")
        if isinstance(scores, dict):
            shown = sorted(expected | found)
            lines.append(" " * 26 + "scores: " + ", ".join(
                f"{c} {float(scores[c]):.3g}" for c in shown if c in scores))
    lines.append("all tools agree on the drifted columns" if mismatches == 0 else
                 f"AGREEMENT CHECK: {mismatches} side(s) disagree with the shifted columns")
    return lines


def _ratio(peer: Measure, tailor: Measure) -> tuple[float, float, float] | None:
    if None in (peer.seconds, tailor.seconds, peer.peak_mib, tailor.peak_mib):
        return None
    assert peer.seconds and tailor.seconds and peer.peak_mib and tailor.peak_mib
    return (peer.seconds / tailor.seconds, peer.inner / tailor.inner,
            peer.peak_mib / tailor.peak_mib)


def ratios(best: dict[str, Measure], sides: dict[str, tuple[str, str]]) -> list[str]:
    """Peer / Tailor ratios: each peer against Tailor on the same method (fair), and at its
    defaults against Tailor's PSI (the old comparison). ``sides``: key -> (tool, method)."""
    lines = ["| peer side | against | wall | in-process | peak memory | speed target "
             "(in-process) | memory target | old ratio |", "|---|---|---|---|---|---|---|---|"]
    for key, (tool, method) in sides.items():
        if tool == "tailor":
            continue
        against = f"tailor {'psi' if method == 'default' else method}"
        r = _ratio(best[key], best[against])
        if r is None:
            lines.append(f"| {key} | {against} | — | — | — | not measured | | |")
            continue
        wall, inner, memory = r
        speed = "met" if inner >= TARGETS[tool] else "**not met**"
        mem = ("met" if memory >= MEMORY_TARGET else "**not met**") if tool == "evidently" else ""
        old = OLD_RATIOS[tool] if method == "default" else ""
        lines.append(f"| {key} | {against} | {wall:.1f}x | {inner:.1f}x | {memory:.1f}x | "
                     f">= {TARGETS[tool]:.0f}x: {speed} | {mem} | {old} |")
    return lines


def part_b_summary(measures: list[Measure]) -> list[str]:
    """Tailor's best check against the best of the reads (both ceilings), and its memory."""
    reads = [m for m in measures if m.name.startswith("pyarrow") and m.seconds]
    checks = [m for m in measures if m.name == "tailor" and m.seconds]
    if not reads or not checks:
        return ["part B: no ratio (a run failed)"]
    tailor, read = best_of(checks), best_of(reads)
    wall = min(m.seconds for m in reads if m.seconds)
    assert tailor.seconds is not None
    first = best_of([m for m in measures if m.name == "tailor (first file)"])
    return [
        f"tailor / best read: in-process {tailor.inner / read.inner:.2f}x ({tailor.inner:.2f} s "
        f"vs {read.name} {read.inner:.2f} s), wall {tailor.seconds / wall:.2f}x "
        f"(best of {len(checks)} checks and {len(reads)} reads)",
        f"tailor peak memory: {tailor.peak_mib or 0:,.0f} MiB for all rows, "
        f"{first.peak_mib or 0:,.0f} MiB for the first file; drifted "
        f"{len(tailor.info.get('drifted') or [])} columns",  # type: ignore[arg-type]
    ]
