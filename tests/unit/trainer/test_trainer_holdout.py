"""The recent holdout on local files: the most recent production rows are set aside (never
trained, validated or tested on) and described in recent-holdout.json; too few make no holdout;
production rows without a readable timestamp fail the gate naming the column, with nothing
locked or written."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tailor_contract.trainingjob import RecentHoldout
from tailor_trainer.data import holdout
from tailor_trainer.errors import DataQualityFailed
from tailor_trainer.pipeline import data
from tailor_trainer.pipeline.context import RunContext

from tests.support.trainer import PlainRecipe, local_context

CURATED = [{"id": f"ex-{i}", "text": f"example text {i}", "label": "ab"[i % 2]}
           for i in range(60)]
T0 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()


def production_rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    """Production examples predicted one minute apart: prod-<i> at T0 + i minutes."""
    return [{"id": f"prod-{i}", "text": f"production text {i}", "label": "ab"[i % 2],
             "timestamp": datetime.fromtimestamp(T0 + 60 * i, UTC).isoformat()}
            for i in range(start, start + count)]


def context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, production: list[Path],
            group: bool = False, **evaluation: Any) -> RunContext:
    """A run of the curated rows (each its own group when `group`) and the production files."""
    source = tmp_path / "data.csv"
    source.write_text("id,text,label,g\n" + "".join(
        f"{r['id']},{r['text']},{r['label']},curated-{r['id']}\n" for r in CURATED))
    columns = {"text": "text", "group": "g"} if group else {"text": "text"}
    spec = {"task": "text-classification", "model": {"base": "/models/m"},
            "data": {"uri": str(source), "productionUris": [str(p) for p in production],
                     "columns": columns,
                     "quality": {"minExamples": 10, "classBalance": {"minPerClass": 2}},
                     "split": {"validation": 0.2, "test": 0.2}},
            "evaluation": evaluation, "output": {"uri": "s3://unused/models"}}
    return local_context(tmp_path, monkeypatch, spec)


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def stage(ctx: RunContext) -> data.LocalData:
    local = data.read(ctx)
    data.encode(PlainRecipe(), local)  # type: ignore[arg-type]
    data.gate(ctx, PlainRecipe(), local)  # type: ignore[arg-type]
    return local


def test_the_most_recent_production_rows_are_held_out_and_nowhere_else(tmp_path, monkeypatch):
    # 100 production rows in two files, out of time order: 30% = 30 rows, the latest.
    rows = production_rows(100)
    first = write_parquet(tmp_path / "a.parquet", rows[50:])
    second = write_parquet(tmp_path / "b.parquet", rows[:50])
    ctx = context(tmp_path, monkeypatch, [first, second])
    local = stage(ctx)
    held = {i for i, _, _ in local.recent}
    assert held == {f"prod-{i}" for i in range(70, 100)}
    assert len(local.recent_items) == 30
    assert not held & {i for i, _, _ in local.test}
    held_texts = {f"production text {i}" for i in range(70, 100)}
    assert not held_texts & set(local.train_text + local.val_text)
    # Every other production row trains or validates; none is a test example.
    assert len(local.train_text) + len(local.val_text) + len(local.test) == 60 + 70
    assert all(i.startswith("ex-") for i, _, _ in local.test)
    assert ctx.quality is not None
    assert ctx.quality.production == {"uris": [str(first), str(second)], "rows": 100,
                                      "leftOut": 0, "recentHoldout": 30}
    assert ctx.quality.split["recent"] == 30
    manifest = data.recent_manifest(ctx, PlainRecipe(), local)  # type: ignore[arg-type]
    assert manifest is not None
    assert (manifest["count"], manifest["planned"], manifest["productionRows"]) == (30, 30, 100)
    assert manifest["applicable"] and manifest["leftOut"] == 0
    assert manifest["from"] == "2026-11-01T01:10:00Z" and manifest["to"] == "2026-11-01T01:39:00Z"
    assert [e["id"] for e in manifest["examples"]] == sorted(held)
    assert all(len(e["sha256"]) == 64 for e in manifest["examples"])


def test_too_few_production_rows_make_no_holdout_and_all_of_them_train(tmp_path, monkeypatch):
    only = write_parquet(tmp_path / "p.parquet", production_rows(12))
    ctx = context(tmp_path, monkeypatch, [only])
    local = stage(ctx)
    assert local.recent == [] and ctx.recent is not None and not ctx.recent.applicable
    assert ctx.recent.why_not() == ("12 labelled production examples, fewer than "
                                    "evaluation.recentHoldout.minExamples (30): no recent holdout")
    assert len(local.train_text) + len(local.val_text) + len(local.test) == 72
    manifest = data.recent_manifest(ctx, PlainRecipe(), local)  # type: ignore[arg-type]
    assert manifest is not None and not manifest["applicable"] and manifest["count"] == 0


def test_at_least_min_examples_are_held_out(tmp_path, monkeypatch):
    only = write_parquet(tmp_path / "p.parquet", production_rows(40))
    ctx = context(tmp_path, monkeypatch, [only], recentHoldout={"fraction": 0.1,
                                                                "minExamples": 15})
    local = stage(ctx)
    assert {i for i, _, _ in local.recent} == {f"prod-{i}" for i in range(25, 40)}


def test_production_data_without_the_timestamp_column_fails_the_gate(tmp_path, monkeypatch):
    rows = [{k: v for k, v in r.items() if k != "timestamp"} for r in production_rows(40)]
    only = write_parquet(tmp_path / "p.parquet", rows)
    ctx = context(tmp_path, monkeypatch, [only])
    with pytest.raises(DataQualityFailed, match=r"timestamp column 'timestamp' "
                       r"\(data.columns.timestamp\)") as info:
        data.read(ctx)
    assert (info.value.checks, info.value.permanent) == ("failed: timestamps", True)
    # Nothing was written: no test set locked, no report, no holdout.
    assert not (tmp_path / "models").exists()


def test_an_unreadable_timestamp_fails_the_gate_naming_the_row(tmp_path, monkeypatch):
    rows = production_rows(40)
    rows[7]["timestamp"] = "yesterday"
    rows[9]["timestamp"] = None
    only = write_parquet(tmp_path / "p.parquet", rows)
    ctx = context(tmp_path, monkeypatch, [only])
    with pytest.raises(DataQualityFailed, match=r"2 row\(s\) of data.productionUris have no "
                       r"readable timestamp in column 'timestamp'.*'prod-7' has 'yesterday'"):
        data.read(ctx)
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(("text", "seconds"), [
    ("2026-11-01T00:00:00Z", T0), ("2026-11-01T01:00:00+01:00", T0),
    ("2026-11-01 00:00:00", T0), ("2026-11-01 00:00:00.000000000", T0),
    (str(T0), T0), ("1.5", 1.5), ("", None), ("nan", None), ("tomorrow", None), (None, None)])
def test_timestamps_in_the_usual_forms(text: str | None, seconds: float | None) -> None:
    assert holdout.epoch_seconds(text) == seconds


def test_arrow_timestamps_and_epoch_numbers_are_read(tmp_path, monkeypatch):
    table = pa.table({"id": [f"p{i}" for i in range(40)], "text": [f"t {i}" for i in range(40)],
                      "label": ["ab"[i % 2] for i in range(40)],
                      "timestamp": pa.array([int((T0 + i) * 1e6) for i in range(40)],
                                            pa.timestamp("us", tz="UTC"))})
    pq.write_table(table, tmp_path / "arrow.parquet")
    (tmp_path / "epoch.jsonl").write_text("".join(json.dumps(
        {"id": f"q{i}", "text": f"u {i}", "label": "ab"[i % 2], "timestamp": T0 + 100 + i}) + "\n"
        for i in range(20)))
    ctx = context(tmp_path, monkeypatch, [tmp_path / "arrow.parquet", tmp_path / "epoch.jsonl"])
    local = stage(ctx)
    # 60 rows: 30% is 18, fewer than minExamples, so 30; the JSONL rows are the latest.
    assert {i for i, _, _ in local.recent} == ({f"q{i}" for i in range(20)}
                                               | {f"p{i}" for i in range(30, 40)})


def test_equal_timestamps_are_ordered_by_id_and_groups_stay_together() -> None:
    rows = [(5.0, "b"), (5.0, "a"), (5.0, "c"), (1.0, "z")]
    assert holdout.most_recent(rows, 2) == [(5.0, "a"), (5.0, "b")]
    assert holdout.holdout_size(29, RecentHoldout()) == 0
    assert holdout.holdout_size(30, RecentHoldout()) == 30
    assert holdout.holdout_size(1000, RecentHoldout()) == 300


def test_a_group_of_the_holdout_is_held_out_whole(tmp_path, monkeypatch):
    # prod-5 is old enough to train, but shares its group with prod-39, which is held out.
    rows = production_rows(40)
    for r in rows:
        r["g"] = "thread-late" if r["id"] in ("prod-39", "prod-5") else f"thread-{r['id']}"
    only = write_parquet(tmp_path / "p.parquet", rows)
    ctx = context(tmp_path, monkeypatch, [only], group=True)
    local = stage(ctx)
    assert "prod-39" in {i for i, _, _ in local.recent}
    assert "production text 5" not in local.train_text + local.val_text
    assert ctx.quality is not None and ctx.quality.split["held-out"] == 1


def test_a_held_out_row_whose_id_names_a_curated_example_is_left_out_and_counted(
        tmp_path, monkeypatch):
    # The latest production row reuses a curated id: the curated row wins, as everywhere.
    rows = production_rows(40)
    rows[39] = {**rows[39], "id": "ex-3", "text": "a different text"}
    only = write_parquet(tmp_path / "p.parquet", rows)
    ctx = context(tmp_path, monkeypatch, [only])
    local = stage(ctx)
    assert ctx.recent is not None and "ex-3" in ctx.recent.ids
    assert len(local.recent) == 29 and "ex-3" not in {i for i, _, _ in local.recent}
    manifest = data.recent_manifest(ctx, PlainRecipe(), local)  # type: ignore[arg-type]
    assert manifest is not None
    assert (manifest["planned"], manifest["count"], manifest["leftOut"]) == (30, 29, 1)
    assert ctx.quality is not None and ctx.quality.production is not None
    assert ctx.quality.production["leftOut"] == 1
