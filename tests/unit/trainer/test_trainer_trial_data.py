"""The data stage in trial mode on local files: rows of the test set (locked or not yet) and
of the recent holdout are dropped before anything sees them, the gate counts only the trial's
train and validation rows, nothing is locked or written outside the trial's prefix; every run
records the ids it read by split (ids-read.json)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tailor_contract import trainer_api
from tailor_trainer.errors import DataQualityFailed
from tailor_trainer.objective import Objective, Trial
from tailor_trainer.pipeline import data
from tailor_trainer.pipeline.context import RunContext

from tests.support.trainer import PlainRecipe, local_context

CURATED = [{"id": f"ex-{i}", "text": f"example text {i}", "label": "ab"[i % 2]}
           for i in range(80)]
T0 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()


def write(tmp_path: Path, rows: list[dict[str, str]], production: int = 0) -> dict[str, Any]:
    source = tmp_path / "data.csv"
    source.write_text("id,text,label\n" + "".join(
        f"{r['id']},{r['text']},{r['label']}\n" for r in rows))
    spec: dict[str, Any] = {
        "task": "text-classification", "model": {"base": "/models/m"},
        "data": {"uri": str(source), "columns": {"text": "text"},
                 "quality": {"minExamples": 10, "classBalance": {"minPerClass": 2}},
                 "split": {"validation": 0.2, "test": 0.25}},
        "evaluation": {"recentHoldout": {"fraction": 0.5, "minExamples": 5}},
        "output": {"uri": "s3://unused/models"}}
    if production:
        path = tmp_path / "production.parquet"
        pq.write_table(pa.Table.from_pylist([
            {"id": f"prod-{i}", "text": f"production text {i}", "label": "ab"[i % 2],
             "timestamp": datetime.fromtimestamp(T0 + 60 * i, UTC).isoformat()}
            for i in range(production)]), path)
        spec["data"]["productionUris"] = [str(path)]
    return spec


def stage(ctx: RunContext) -> data.LocalData:
    """Stage 1 as `Run._data` orders it on one rank."""
    ctx.locked = data.read_locked(ctx)
    local = data.read(ctx)
    data.encode(PlainRecipe(), local)  # type: ignore[arg-type]
    data.gate(ctx, PlainRecipe(), local)  # type: ignore[arg-type]
    return local


def trial_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  spec: dict[str, Any]) -> RunContext:
    ctx = local_context(tmp_path, monkeypatch, spec)
    artifact = trainer_api.trial_artifact_uri(ctx.cfg.artifact_uri, 0)
    ctx.cfg = dataclasses.replace(ctx.cfg, artifact_uri=artifact, run_id="run-1-trial-0",
                                  trial=Trial(0, Objective("accuracy"), "run-1"))
    return ctx


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_a_trial_before_the_first_lock_reads_no_row_the_lock_will_hold(tmp_path, monkeypatch):
    spec = write(tmp_path, CURATED, production=30)
    trial_ctx = trial_context(tmp_path, monkeypatch, spec)
    trial = stage(trial_ctx)
    models = tmp_path / "models" / "news"
    # Only the trial's own prefix was written; no test set was locked.
    assert files_under(models) == {"runs/run-1/trials/0/data-quality.json"}
    assert trial.test == [] and trial.recent == [] and trial.test_items == []
    assert trial.ids["test"] == [] and trial.ids["recentHoldout"] == []
    kept = trial.ids["train"] + trial.ids["validation"]
    assert len(kept) == len(trial.train_text) + len(trial.val_text)
    assert trial.counts["test"] == trial.counts["recent"] == trial.counts["held-out"] == 0
    assert trial_ctx.quality is not None
    assert trial_ctx.quality.examples == len(kept)  # the gate saw the trial's rows only
    assert set(trial_ctx.quality.split) == {"train", "validation"}
    assert trial_ctx.locked is None

    # The ordinary run that follows locks its test set and holds out the recent rows: none of
    # them was read by the trial, and the trial read every other row exactly as it does.
    run_ctx = local_context(tmp_path, monkeypatch, spec)
    run = stage(run_ctx)
    assert run_ctx.locked is not None and run.ids["test"] and run.ids["recentHoldout"]
    assert not set(kept) & set(run_ctx.locked.ids)
    assert not set(kept) & set(run.ids["recentHoldout"])
    assert sorted(kept) == sorted(run.ids["train"] + run.ids["validation"])
    assert sorted(run.ids["test"]) == sorted(run_ctx.locked.ids)
    document = json.loads(data.ids_document(run))
    assert set(document) == {"train", "validation", "test", "recentHoldout"}
    assert document["recentHoldout"] == sorted(f"prod-{i}" for i in range(15, 30))


def test_a_trial_after_the_lock_drops_the_locked_rows(tmp_path, monkeypatch):
    spec = write(tmp_path, CURATED)
    first = local_context(tmp_path, monkeypatch, spec)
    stage(first)
    assert first.locked is not None
    manifest = Path(trainer_api.test_set_manifest(first.cfg.model_uri, 1))
    locked_bytes = manifest.read_bytes()
    # More data, some of it assigned to test by the hash: with a lock, new rows never are.
    grown = [*CURATED, *({"id": f"new-{i}", "text": f"new text {i}", "label": "ab"[i % 2]}
                         for i in range(40))]
    ctx = trial_context(tmp_path, monkeypatch, write(tmp_path, grown))
    trial = stage(ctx)
    assert ctx.locked is not None  # read (ids only), to leave those rows out
    kept = set(trial.ids["train"] + trial.ids["validation"])
    assert not kept & set(first.locked.ids)
    assert kept | set(first.locked.ids) == {r["id"] for r in grown}
    assert manifest.read_bytes() == locked_bytes


def test_a_trial_gate_fails_on_the_rows_it_keeps(tmp_path, monkeypatch):
    # Ids used twice (each pair in one part; some of them in the trial's train/validation).
    rows = [*CURATED, *({"id": f"dup-{i}", "text": f"text {i} {copy}", "label": "ab"[copy]}
                        for i in range(8) for copy in (0, 1))]
    ctx = trial_context(tmp_path, monkeypatch, write(tmp_path, rows))
    with pytest.raises(DataQualityFailed, match="ids must be present and unique"):
        stage(ctx)
    report = json.loads(Path(ctx.cfg.artifact_uri, trainer_api.ARTIFACT_DATA_QUALITY).read_text())
    assert report["failed"] == ["ids"]
