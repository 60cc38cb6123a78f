"""Drift statistics at scale: Tailor vs Evidently vs NannyML, and Tailor vs a bare pyarrow read.

One run, the same data for everyone:

A. 1M reference + 1M current rows x 25 numeric columns (five of them shifted), from Parquet on
   local disk: Tailor (profile the reference column by column from its file, then check the
   current window), Evidently's DataDriftPreset, NannyML's UnivariateDriftCalculator with
   Jensen-Shannon (fit + calculate).
B. 10M rows x 50 numeric columns as Parquet in MinIO: Tailor's check streaming the objects vs
   the time pyarrow alone needs to read the same columns (the physical limit; the faster of its
   dataset scan with default read-ahead and Tailor's row-group reader doing nothing else);
   Tailor on the first 1M rows too, to show that its memory does not grow with the window.

Every measurement runs in its own subprocess; time is the child's wall time and peak memory
its own maximum resident set (VmHWM at its end, reported on its last output line; not
ru_maxrss, which a child inherits from this process). Evidently and NannyML live in their own
virtualenv ($HOME/.cache/tailor/venv-bench-drift, created on first use) so their pins never
touch the project's environment.

    source .tailor/env && ~/.cache/tailor/venv/bin/python bench/drift_scale.py
    ... --rows 100000 --big-rows 1000000   # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEER_VENV = Path.home() / ".cache" / "tailor" / "venv-bench-drift"
# Evidently 0.7.23 needs pandas 2 (it imports a helper pandas 3 removed).
PEER_PINS = ["evidently==0.7.23", "nannyml==0.13.1", "pandas<3", "pyarrow==26.0.1"]
SHIFTED = 5


@dataclass
class Measure:
    name: str
    seconds: float | None
    peak_mib: float | None
    detail: dict[str, float]
    error: str | None = None


def run_child(name: str, python: str, code: str, timeout: float, env: dict[str, str]) -> Measure:
    """Run ``code`` in a fresh interpreter; wall time and peak RSS come from the parent."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [python, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return Measure(name, None, None, {}, f"did not finish within {timeout:.0f} s")
    seconds = time.perf_counter() - started
    # The child reports its own peak (VmHWM, see PEAK) on its last line: RUSAGE_CHILDREN would
    # aggregate every child of this process.
    if proc.returncode != 0:
        tail = (err or out).strip().splitlines()[-3:]
        return Measure(name, None, None, {}, f"exit {proc.returncode}: {' | '.join(tail)}")
    detail = json.loads(out.strip().splitlines()[-1])
    peak = detail.pop("peak_mib")
    return Measure(name, seconds, peak, detail)


# A child's ru_maxrss starts at its parent's peak (Linux keeps it across fork and exec), so a
# child of this process, which builds the data, would report at least the parent's peak.
# VmHWM is the high-water mark of the child's own address space.
PEAK = textwrap.dedent(
    """
    import resource as _r
    def _peak():
        try:
            with open("/proc/self/status") as _status:
                for _line in _status:
                    if _line.startswith("VmHWM:"):
                        return int(_line.split()[1]) / 1024
        except OSError:
            pass
        return _r.getrusage(_r.RUSAGE_SELF).ru_maxrss / 1024
    """
)

TAILOR_LOCAL = PEAK + textwrap.dedent(
    """
    import json, sys, time
    from tailor.drift import (
        CheckSettings, ParquetColumns, build_reference_profile, read_log_batches, run_check)
    ref_path, cur_path = {ref!r}, {cur!r}
    t0 = time.perf_counter()
    ref = ParquetColumns(ref_path)  # the file's metadata; columns are read one at a time
    t1 = time.perf_counter()
    profile = build_reference_profile(ref, ["a"] * ref.num_rows, classes=["a"])
    t2 = time.perf_counter()
    result = run_check(profile, read_log_batches(cur_path), settings=CheckSettings())
    t3 = time.perf_counter()
    assert result.predictions == {rows}, result.predictions
    print(len(result.drifted_features), "drifted", file=sys.stderr)
    print(json.dumps({{"load_ref": t1 - t0, "profile": t2 - t1, "check": t3 - t2,
                      "peak_mib": _peak()}}))
    """
)

EVIDENTLY = PEAK + textwrap.dedent(
    """
    import json, time
    import pandas as pd
    t0 = time.perf_counter()
    ref = pd.read_parquet({ref!r}); cur = pd.read_parquet({cur!r})
    t1 = time.perf_counter()
    try:
        from evidently import Report
        from evidently.presets import DataDriftPreset
        snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
        out = snapshot.dict()
    except ImportError:
        from evidently.metric_preset import DataDriftPreset
        from evidently.report import Report
        report = Report(metrics=[DataDriftPreset()])
        report.run(reference_data=ref, current_data=cur)
        out = report.as_dict()
    t2 = time.perf_counter()
    print(json.dumps({{"load": t1 - t0, "calculate": t2 - t1, "peak_mib": _peak()}}))
    """
)

NANNYML = PEAK + textwrap.dedent(
    """
    import json, time
    import pandas as pd
    import nannyml as nml
    t0 = time.perf_counter()
    ref = pd.read_parquet({ref!r}); cur = pd.read_parquet({cur!r})
    t1 = time.perf_counter()
    calc = nml.UnivariateDriftCalculator(
        column_names=list(ref.columns), continuous_methods=["jensen_shannon"],
        categorical_methods=["jensen_shannon"])
    calc.fit(ref)
    t2 = time.perf_counter()
    res = calc.calculate(cur)
    t3 = time.perf_counter()
    print(json.dumps({{"load": t1 - t0, "fit": t2 - t1, "calculate": t3 - t2,
                      "peak_mib": _peak()}}))
    """
)

# The S3 cases' child processes read MinIO through `fs`, with the credentials from the environment.
S3_PEAK = PEAK + textwrap.dedent(
    """
    import os
    from tailor.io.objectstore import s3_filesystem
    fs = s3_filesystem(endpoint=os.environ["AWS_ENDPOINT_URL_S3"],
                       access_key=os.environ["AWS_ACCESS_KEY_ID"],
                       secret_key=os.environ["AWS_SECRET_ACCESS_KEY"])
    """
)

# The ceiling is pyarrow's own dataset scan with its defaults (several files and batches read
# ahead at once), independent of Tailor's reader.
ARROW_S3 = S3_PEAK + textwrap.dedent(
    """
    import json, time
    import pyarrow.dataset as ds
    t0 = time.perf_counter()
    rows = 0
    dataset = ds.dataset({uri!r}.removeprefix("s3://"), filesystem=fs, format="parquet")
    for batch in dataset.to_batches(columns={columns!r}):
        rows += batch.num_rows
    t1 = time.perf_counter()
    assert rows == {rows}, rows
    print(json.dumps({{"read": t1 - t0, "peak_mib": _peak()}}))
    """
)

# The same read through Tailor's reader (a row group at a time, one read ahead) with nothing
# done to the batches: the I/O floor of Tailor's own check.
ARROW_ROW_GROUPS_S3 = S3_PEAK + textwrap.dedent(
    """
    import json, time
    from tailor.drift import read_log_batches
    t0 = time.perf_counter()
    rows = 0
    for batch in read_log_batches({uri!r}, filesystem=fs, columns={columns!r}):
        rows += batch.num_rows
    t1 = time.perf_counter()
    assert rows == {rows}, rows
    print(json.dumps({{"read": t1 - t0, "peak_mib": _peak()}}))
    """
)

TAILOR_S3 = S3_PEAK + textwrap.dedent(
    """
    import json, time
    from tailor.drift import ReferenceProfile, read_log_batches, run_check
    profile = ReferenceProfile.from_json(json.load(open({profile!r})))
    t0 = time.perf_counter()
    result = run_check(profile, read_log_batches({uri!r}, filesystem=fs))
    t1 = time.perf_counter()
    assert result.predictions == {rows}, result.predictions
    print(json.dumps({{"check": t1 - t0, "peak_mib": _peak()}}))
    """
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


def versions(python: str) -> str:
    code = "import evidently, nannyml; print(evidently.__version__, nannyml.__version__)"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def best_of(runs: list[Measure]) -> Measure:
    """The run with the least in-process time (the machine is shared: noise only adds)."""
    done = [m for m in runs if m.seconds is not None]
    return min(done, key=lambda m: sum(m.detail.values())) if done else runs[0]


def part_a(rows: int, cols: int, workdir: Path, timeout: float, repeat: int) -> list[Measure]:
    import pyarrow.parquet as pq

    ref_path, cur_path = workdir / "reference.parquet", workdir / "current.parquet"
    pq.write_table(make_frame(rows, cols, 1, 0), ref_path, row_group_size=131_072)
    pq.write_table(make_frame(rows, cols, 2, SHIFTED), cur_path, row_group_size=131_072)
    peer = ensure_peer_venv()
    print(f"peers: evidently nannyml = {versions(peer)}", flush=True)
    env = dict(os.environ)
    fmt = {"ref": str(ref_path), "cur": str(cur_path), "rows": rows}
    runs: dict[str, list[Measure]] = {"tailor": [], "nannyml": [], "evidently": []}
    # Tailor and NannyML alternate `repeat` times (best of each counts); Evidently runs once.
    plan = [("tailor", sys.executable, TAILOR_LOCAL.format(**fmt)),
            ("nannyml", peer, NANNYML.format(**fmt))] * repeat
    plan.append(("evidently", peer, EVIDENTLY.format(**fmt)))
    for name, python, code in plan:
        m = run_child(name, python, code, timeout, env)
        print(f"  {m}", flush=True)
        runs[name].append(m)
    return [best_of(r) for r in runs.values()]


def part_b(
    rows: int, cols: int, workdir: Path, files: int, timeout: float, repeat: int
) -> list[Measure]:
    import pyarrow.parquet as pq
    from tailor.drift import build_reference_profile
    from tailor.io.objectstore import s3_filesystem

    env = dict(os.environ)
    fs = s3_filesystem(
        endpoint=env["AWS_ENDPOINT_URL_S3"],
        access_key=env["AWS_ACCESS_KEY_ID"],
        secret_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    import boto3

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
        per_file = rows // files
        started = time.perf_counter()
        for i in range(files):
            table = make_frame(per_file, cols, 100 + i, SHIFTED)
            with fs.open_output_stream(f"{bucket}/logs/part-{i:03d}.parquet") as sink:
                pq.write_table(table, sink, row_group_size=131_072)
            del table
        print(f"  wrote {rows:,} x {cols} to s3://{bucket}/logs/ in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        columns = [f"f{j:02d}" for j in range(cols)]
        first = f"s3://{bucket}/logs/part-000.parquet"
        whole = f"s3://{bucket}/logs/"
        # Rounds of both reads, check, check of the first file; a last read sees a warm store.
        plan = [
            ("pyarrow read", ARROW_S3.format(uri=whole, columns=columns, rows=per_file * files)),
            ("pyarrow read (row groups)", ARROW_ROW_GROUPS_S3.format(
                uri=whole, columns=columns, rows=per_file * files)),
            ("tailor", TAILOR_S3.format(uri=whole, profile=str(profile_path),
                                        rows=per_file * files)),
            ("tailor (first file)", TAILOR_S3.format(uri=first, profile=str(profile_path),
                                                     rows=per_file)),
        ] * repeat
        plan.append(("pyarrow read (again)", ARROW_S3.format(uri=whole, columns=columns,
                                                             rows=per_file * files)))
        for name, code in plan:
            m = run_child(name, sys.executable, code, timeout, env)
            print(f"  {m}", flush=True)
            measures.append(m)
    finally:
        fs.delete_dir_contents(bucket)
        s3.delete_bucket(Bucket=bucket)
        print(f"  deleted bucket {bucket}", flush=True)
    return measures


def fmt(m: Measure) -> str:
    if m.seconds is None:
        return f"| {m.name} | — | — | {m.error} |"
    detail = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                       for k, v in m.detail.items())
    return f"| {m.name} | {m.seconds:.1f} | {m.peak_mib:,.0f} | {detail} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=25)
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument("--big-cols", type=int, default=50)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of the fast runs (all but Evidently); the best counts")
    parser.add_argument("--skip-a", action="store_true")
    parser.add_argument("--skip-b", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tailor-drift-bench-"))
    try:
        print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}", flush=True)
        if not args.skip_a:
            print(f"A. {args.rows:,} + {args.rows:,} rows x {args.cols}", flush=True)
            a = part_a(args.rows, args.cols, workdir, args.timeout, args.repeat)
            print("\n| tool | wall s | peak MiB | phases (s) |\n|---|---|---|---|")
            for m in a:
                print(fmt(m))
            tailor = a[0]
            for peer in a[1:]:
                if peer.seconds and tailor.seconds and tailor.peak_mib and peer.peak_mib:
                    inner = sum(peer.detail.values()) / sum(tailor.detail.values())
                    print(f"{peer.name}/tailor: wall time {peer.seconds / tailor.seconds:.1f}x, "
                          f"in-process time {inner:.1f}x, "
                          f"peak memory {peer.peak_mib / tailor.peak_mib:.1f}x")
        if not args.skip_b:
            print(f"\nB. {args.big_rows:,} rows x {args.big_cols} from MinIO", flush=True)
            b = part_b(args.big_rows, args.big_cols, workdir, args.files, args.timeout, args.repeat)
            print("\n| run | wall s | peak MiB | phases (s) |\n|---|---|---|---|")
            for m in b:
                print(fmt(m))
            reads = [m.seconds for m in b if m.name.startswith("pyarrow") and m.seconds]
            tailor_b = best_of([m for m in b if m.name == "tailor"])
            if reads and tailor_b.seconds:
                best = min((m for m in b if m.name.startswith("pyarrow") and m.seconds),
                           key=lambda m: m.detail["read"])
                print(f"tailor / pyarrow read: wall {tailor_b.seconds / min(reads):.2f}x, "
                      f"in-process {tailor_b.detail['check'] / best.detail['read']:.2f}x "
                      f"(best of {len(reads)} reads)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
