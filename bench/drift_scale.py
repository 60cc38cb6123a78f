"""Drift statistics at scale: Tailor vs Evidently vs NannyML, and Tailor vs a bare pyarrow read.

One run, the same data for everyone:

A. 1M reference + 1M current rows x 25 numeric columns (five of them shifted), from Parquet on
   local disk. Every side reads both files and decides which columns drifted: Tailor (profile
   the reference column by column from its file, then check the current window) with PSI and
   with Jensen-Shannon named explicitly; NannyML's UnivariateDriftCalculator with one chunk and
   Jensen-Shannon at Tailor's threshold (it has no PSI), and at its defaults (10 chunks);
   Evidently's DataDriftPreset with PSI and with Jensen-Shannon at Tailor's thresholds, and at
   its defaults (exact Wasserstein on the raw rows). Fair ratios pair the same method; the
   peers' defaults are compared with Tailor's PSI, as before. Every side runs ``--repeat``
   times, the order reversed every other round, and its best in-process time counts. The
   drifted columns of every side are printed and checked against the five shifted ones.
B. 10M rows x 50 numeric columns as Parquet in MinIO: Tailor's PSI check streaming the objects
   vs the time pyarrow alone needs to read the same columns (the physical limit; the faster of
   its dataset scan with default read-ahead and Tailor's row-group reader doing nothing else);
   Tailor on the first 1M rows too, to show that its memory does not grow with the window.

Every measurement runs in its own subprocess (bench/drift_scale_children.py); wall time is
the child's from the parent, in-process time the sum of its timed phases (no interpreter start
or imports), peak memory its own VmHWM. Evidently and NannyML live in their own virtualenv
($HOME/.cache/tailor/venv-bench-drift, created on first use) so their pins never touch the
project's environment.

    source .tailor/env && ~/.cache/tailor/venv/bin/python bench/drift_scale.py
    ... --rows 100000 --big-rows 1000000 --repeat 1   # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from drift_scale_children import (
    ARROW_ROW_GROUPS_S3,
    ARROW_S3,
    TAILOR_S3,
    Side,
    part_a_sides,
)
from drift_scale_report import (
    Measure,
    agreement,
    best_of,
    part_b_summary,
    ratios,
    run_child,
    table,
)

PEER_VENV = Path.home() / ".cache" / "tailor" / "venv-bench-drift"
# Evidently 0.7.23 needs pandas 2 (it imports a helper pandas 3 removed).
PEER_PINS = ["evidently==0.7.23", "nannyml==0.13.1", "pandas<3", "pyarrow==26.0.1"]
SHIFTED = 5
VERSIONS = (
    "import importlib.metadata as m, sys; print('python', sys.version.split()[0], "
    "*(p + ' ' + m.version(p) for p in {packages!r}))"
)


def make_frame(rows: int, cols: int, seed: int, shifted: int):  # type: ignore[no-untyped-def]
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    data = {}
    for j in range(cols):
        x = rng.standard_normal(rows)
        if j % 3 == 1:
            x = np.exp(x)  # skewed
        if j < shifted:
            x = x * 1.2 + 0.5
        data[f"f{j:02d}"] = x
    return pa.table(data)


def ensure_peer_venv() -> str:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {PEER_VENV} with {' '.join(PEER_PINS)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PINS], check=True)
    return str(python)


def versions(python: str, packages: list[str]) -> str:
    code = VERSIONS.format(packages=packages)
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip()[-200:]


def load_average() -> str:
    return Path("/proc/loadavg").read_text().strip()


def part_a(rows: int, cols: int, workdir: Path, timeout: float, repeat: int) -> None:
    import pyarrow.parquet as pq

    ref_path, cur_path = workdir / "reference.parquet", workdir / "current.parquet"
    pq.write_table(make_frame(rows, cols, 1, 0), ref_path, row_group_size=131_072)
    pq.write_table(make_frame(rows, cols, 2, SHIFTED), cur_path, row_group_size=131_072)
    peer = ensure_peer_venv()
    print("tailor side: " + versions(sys.executable, ["numpy", "scipy", "pyarrow"]))
    print("peer side:   " + versions(peer, ["evidently", "nannyml", "pandas", "numpy", "scipy",
                                            "pyarrow"]))
    sides = part_a_sides(str(ref_path), str(cur_path), rows)
    print("configurations:")
    for side in sides:
        print(f"  {side.key:22} {side.config}")
    env = dict(os.environ)
    runs: dict[str, list[Measure]] = {s.key: [] for s in sides}
    for round_ in range(repeat):
        # Alternate: every other round runs the sides in reverse, so no side always follows
        # the same neighbour or always runs at the same point of a drifting load.
        order = sides if round_ % 2 == 0 else sides[::-1]
        print(f"round {round_ + 1} of {repeat} (load {load_average()})", flush=True)
        for side in order:
            m = run_child(side.key, _python(side, peer), side.template.format(**side.args),
                          timeout, env)
            print(f"  {m}", flush=True)
            runs[side.key].append(m)
    best = {key: best_of(r) for key, r in runs.items()}
    print("\n" + "\n".join(table(list(best.values()), f"A: best of {repeat}")))
    for key, m in best.items():
        extra = {k: v for k, v in m.info.items() if k not in ("drifted", "scores")}
        if extra:
            print(f"  {key}: {extra}")
    print("\n" + "\n".join(ratios(best, {s.key: (s.tool, s.method) for s in sides})))
    print("\n" + "\n".join(agreement(best, {f"f{j:02d}" for j in range(SHIFTED)})))


def _python(side: Side, peer: str) -> str:
    return sys.executable if side.tool == "tailor" else peer


def _write_logs(fs, bucket: str, rows: int, cols: int, files: int) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    started = time.perf_counter()
    for i in range(files):
        table = make_frame(rows // files, cols, 100 + i, SHIFTED)
        with fs.open_output_stream(f"{bucket}/logs/part-{i:03d}.parquet") as sink:
            pq.write_table(table, sink, row_group_size=131_072)
        del table
    print(f"  wrote {rows:,} x {cols} to s3://{bucket}/logs/ in "
          f"{time.perf_counter() - started:.0f} s", flush=True)


def part_b(
    rows: int, cols: int, workdir: Path, files: int, timeout: float, repeat: int
) -> list[Measure]:
    import boto3
    from tailor.drift import build_reference_profile
    from tailor.io.objectstore import s3_filesystem

    env = dict(os.environ)
    fs = s3_filesystem(endpoint=env["AWS_ENDPOINT_URL_S3"], access_key=env["AWS_ACCESS_KEY_ID"],
                       secret_key=env["AWS_SECRET_ACCESS_KEY"])
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"])
    bucket = f"tailor-bench-drift-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    measures = []
    try:
        ref = make_frame(1_000_000, cols, 3, 0)
        profile = build_reference_profile(
            {c: ref[c] for c in ref.column_names}, ["a"] * ref.num_rows, classes=["a"]
        )
        del ref
        profile_path = workdir / "profile.json"
        profile_path.write_text(json.dumps(profile.to_json()))
        _write_logs(fs, bucket, rows, cols, files)
        total, columns = rows // files * files, [f"f{j:02d}" for j in range(cols)]
        whole, first = f"s3://{bucket}/logs/", f"s3://{bucket}/logs/part-000.parquet"
        read = ARROW_S3.format(uri=whole, columns=columns, rows=total)
        # Rounds of both reads, check, check of the first file; a last read sees a warm store.
        plan = [
            ("pyarrow read", read),
            ("pyarrow read (row groups)",
             ARROW_ROW_GROUPS_S3.format(uri=whole, columns=columns, rows=total)),
            ("tailor", TAILOR_S3.format(uri=whole, profile=str(profile_path), rows=total)),
            ("tailor (first file)",
             TAILOR_S3.format(uri=first, profile=str(profile_path), rows=rows // files)),
        ] * repeat + [("pyarrow read (again)", read)]
        for name, code in plan:
            m = run_child(name, sys.executable, code, timeout, env)
            print(f"  {m}", flush=True)
            measures.append(m)
    finally:
        _delete_bucket(fs, s3, bucket)
    return measures


def _delete_bucket(fs, s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """Remove the bench's bucket; a store that went away (the shared stack restarted) is
    reported, not raised over the measurements."""
    try:
        fs.delete_dir_contents(bucket)
        s3.delete_bucket(Bucket=bucket)
        print(f"  deleted bucket {bucket}", flush=True)
    except Exception as exc:  # any failure here is reported the same way
        print(f"  could NOT delete bucket {bucket} (delete it by hand): {exc}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=25)
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument("--big-cols", type=int, default=50)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per child run")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of every side, alternating; the best of each counts")
    parser.add_argument("--skip-a", action="store_true")
    parser.add_argument("--skip-b", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tailor-drift-bench-"))
    try:
        print(f"machine: {os.cpu_count()} CPUs, {_memory()}; {os.uname().sysname} "
              f"{os.uname().release}; load average at start {load_average()}", flush=True)
        print(f"command: {' '.join(sys.argv)}", flush=True)
        if not args.skip_a:
            print(f"\nA. {args.rows:,} + {args.rows:,} rows x {args.cols}", flush=True)
            part_a(args.rows, args.cols, workdir, args.timeout, args.repeat)
        if not args.skip_b:
            print(f"\nB. {args.big_rows:,} rows x {args.big_cols} from MinIO", flush=True)
            b = part_b(args.big_rows, args.big_cols, workdir, args.files, args.timeout,
                       args.repeat)
            print("\n" + "\n".join(table(b, "B: every run")))
            print("\n".join(part_b_summary(b)))
        print(f"\nload average at end {load_average()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _memory() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    return "memory unknown"


if __name__ == "__main__":
    main()
