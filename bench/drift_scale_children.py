"""The child programs of bench/drift_scale.py, and what each side of part A is configured to do.

Each template is formatted and run with ``python -c`` in a fresh interpreter (Tailor's in the
project's venv, the peers' in their own). Every child prints, on its last line, a JSON object
with its phase times in seconds, its own peak resident memory (``peak_mib``, see ``PEAK``) and,
where it decides drift, the names of the columns it found drifted (``drifted``).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

# Tailor's thresholds, spelled out so that a change of its defaults cannot move this bench.
TAILOR_PSI = 0.25
TAILOR_JS = 0.1
"""Jensen-Shannon distance in bits (log base 2), Tailor's threshold."""
EVIDENTLY_JS = TAILOR_JS * math.sqrt(math.log(2))
"""The same threshold for Evidently's distance, which uses natural logarithms: a distance in
nats is sqrt(ln 2) times the distance in bits (the divergence scales by ln 2)."""


@dataclass(frozen=True)
class Side:
    """One configuration of one tool in part A."""

    key: str
    tool: str
    method: str
    """The method family the fair ratios pair on (``psi``, ``js``; ``default`` for a peer's
    own default, compared with Tailor's PSI as the old bench did)."""
    config: str
    """Printed verbatim: exactly what the child runs."""
    template: str
    args: dict[str, object]


# A child's ru_maxrss starts at its parent's peak (Linux keeps it across fork and exec), so a
# child of the bench process, which builds the data, would report at least the parent's peak.
# VmHWM is the high-water mark of the child's own address space.
PEAK = textwrap.dedent(
    """
    import resource as _r
    import warnings as _w
    _w.filterwarnings("ignore")
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
    import json, time
    from tailor.drift import (
        CheckSettings, ParquetColumns, build_reference_profile, read_log_batches, run_check)
    settings = CheckSettings(feature_method={method!r}, feature_threshold={threshold!r})
    t0 = time.perf_counter()
    ref = ParquetColumns({ref!r})  # the file's metadata; columns are read one at a time
    t1 = time.perf_counter()
    profile = build_reference_profile(ref, ["a"] * ref.num_rows, classes=["a"])
    t2 = time.perf_counter()
    result = run_check(profile, read_log_batches({cur!r}), settings=settings)
    t3 = time.perf_counter()
    assert result.predictions == {rows}, result.predictions
    assert {{f.method for f in result.features}} == {{{method!r}}}, result.features
    print(json.dumps({{"load_ref": t1 - t0, "profile": t2 - t1, "check": t3 - t2,
                      "peak_mib": _peak(), "drifted": sorted(result.drifted_features),
                      "scores": {{f.name: f.score for f in result.features}}}}))
    """
)

# Evidently's ValueDrift reports the statistic and its configured threshold; a column drifted
# when a distance reaches the threshold or a p-value falls below it (as its stattests decide).
EVIDENTLY = PEAK + textwrap.dedent(
    """
    import json, time
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset
    t0 = time.perf_counter()
    ref = pd.read_parquet({ref!r}); cur = pd.read_parquet({cur!r})
    t1 = time.perf_counter()
    snapshot = Report([DataDriftPreset(**{options!r})]).run(current_data=cur, reference_data=ref)
    out = snapshot.dict()
    t2 = time.perf_counter()
    drifted, methods, scores = [], set(), {{}}
    for metric in out["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            methods.add(config["method"])
            value, threshold = float(metric["value"]), float(config["threshold"])
            scores[config["column"]] = value
            test = "p_value" in config["method"]
            if (value < threshold) if test else (value >= threshold):
                drifted.append(config["column"])
    print(json.dumps({{"load": t1 - t0, "calculate": t2 - t1, "peak_mib": _peak(),
                      "drifted": sorted(drifted), "methods": sorted(methods),
                      "scores": scores}}))
    """
)

NANNYML = PEAK + textwrap.dedent(
    """
    import json, time
    import pandas as pd
    import nannyml as nml
    from nannyml.thresholds import ConstantThreshold
    options = {options!r}
    if "thresholds" in options:
        options["thresholds"] = {{k: ConstantThreshold(upper=v)
                                 for k, v in options["thresholds"].items()}}
    t0 = time.perf_counter()
    ref = pd.read_parquet({ref!r}); cur = pd.read_parquet({cur!r})
    t1 = time.perf_counter()
    calc = nml.UnivariateDriftCalculator(column_names=list(ref.columns), **options)
    calc.fit(ref)
    t2 = time.perf_counter()
    res = calc.calculate(cur)
    t3 = time.perf_counter()
    frame = res.filter(period="analysis").to_df()
    alerts = [c for c in frame.columns if c[-1] == "alert"]
    drifted = sorted({{c[0] for c in alerts if frame[c].any()}})
    scores = {{c[0]: float(frame[c[:2] + ("value",)].max()) for c in alerts}}
    print(json.dumps({{"load": t1 - t0, "fit": t2 - t1, "calculate": t3 - t2,
                      "peak_mib": _peak(), "drifted": drifted, "chunks": len(frame),
                      "methods": sorted({{c[1] for c in alerts}}), "scores": scores}}))
    """
)


def part_a_sides(ref: str, cur: str, rows: int) -> list[Side]:
    """Tailor with PSI and with Jensen-Shannon; each peer with the same method where it has
    one, and at its defaults (what the old bench compared), reported separately."""
    files = {"ref": ref, "cur": cur}
    nml_fair = {"chunk_number": 1, "continuous_methods": ["jensen_shannon"],
                "thresholds": {"jensen_shannon": TAILOR_JS}}
    return [
        Side("tailor psi", "tailor", "psi",
             f"CheckSettings(feature_method='psi', feature_threshold={TAILOR_PSI}): 10 "
             "reference-quantile bins + 2 open tails, one window",
             TAILOR_LOCAL, {**files, "rows": rows, "method": "psi", "threshold": TAILOR_PSI}),
        Side("tailor js", "tailor", "js",
             f"CheckSettings(feature_method='jensen-shannon', feature_threshold={TAILOR_JS}): "
             "same bins, distance in bits, one window",
             TAILOR_LOCAL, {**files, "rows": rows, "method": "jensen-shannon",
                            "threshold": TAILOR_JS}),
        Side("nannyml js, 1 chunk", "nannyml", "js",
             f"UnivariateDriftCalculator({_kwargs(nml_fair)}) (no PSI in NannyML; its JS bins: "
             "Doane's rule on the reference, distance in bits)",
             NANNYML, {**files, "options": nml_fair}),
        Side("nannyml default", "nannyml", "default",
             "UnivariateDriftCalculator(column_names=...) (defaults: 10 chunks, jensen_shannon, "
             "thresholds at 3 sd of the reference chunks; a column drifted if any chunk alerts)",
             NANNYML, {**files, "options": {}}),
        Side("evidently psi", "evidently", "psi",
             f"DataDriftPreset(method='psi', threshold={TAILOR_PSI}) (its bins: Sturges' rule, "
             "equal width over reference + current; the bin count is not configurable for "
             "numeric columns)",
             EVIDENTLY, {**files, "options": {"method": "psi", "threshold": TAILOR_PSI}}),
        Side("evidently js", "evidently", "js",
             f"DataDriftPreset(method='jensenshannon', threshold={EVIDENTLY_JS:.4f}) (Sturges "
             f"bins; distance in nats, so Tailor's {TAILOR_JS} bits = {EVIDENTLY_JS:.4f})",
             EVIDENTLY, {**files, "options": {"method": "jensenshannon",
                                              "threshold": round(EVIDENTLY_JS, 6)}}),
        Side("evidently default", "evidently", "default",
             "DataDriftPreset() (defaults: above 1,000 rows, normed Wasserstein distance on the "
             "raw rows, threshold 0.1)",
             EVIDENTLY, {**files, "options": {}}),
    ]


def _kwargs(options: dict[str, object]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


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

# PSI named explicitly (not `auto`, whose meaning may change), as in part A.
TAILOR_S3 = S3_PEAK + textwrap.dedent(
    f"""
    import json, time
    from tailor.drift import CheckSettings, ReferenceProfile, read_log_batches, run_check
    settings = CheckSettings(feature_method="psi", feature_threshold={TAILOR_PSI})
    """
) + textwrap.dedent(
    """
    profile = ReferenceProfile.from_json(json.load(open({profile!r})))
    t0 = time.perf_counter()
    result = run_check(profile, read_log_batches({uri!r}, filesystem=fs), settings=settings)
    t1 = time.perf_counter()
    assert result.predictions == {rows}, result.predictions
    print(json.dumps({{"check": t1 - t0, "peak_mib": _peak(),
                      "drifted": sorted(result.drifted_features)}}))
    """
)
