"""The data stage on local files: the pass over the data, the gate's verdict and report, and
the locked test set, at the contract's paths; a refused gate leaves no test set behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tailor_contract import trainer_api
from tailor_trainer.data.split import LockedTestSet
from tailor_trainer.errors import DataQualityFailed
from tailor_trainer.pipeline import data
from tailor_trainer.pipeline.context import RunContext

from tests.support.trainer import PlainRecipe, local_context


def context(tmp_path: Path, rows: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch,
            **split: float) -> RunContext:
    source = tmp_path / "data.csv"
    source.write_text("id,text,label\n" + "".join(
        f"{r['id']},{r['text']},{r['label']}\n" for r in rows))
    spec = {"task": "text-classification", "model": {"base": "/models/m"},
            "data": {"uri": str(source), "columns": {"text": "text"},
                     "quality": {"minExamples": 10, "classBalance": {"minPerClass": 2}},
                     "split": {"validation": 0.2, "test": 0.2, **split}},
            "output": {"uri": "s3://unused/models"}}
    return local_context(tmp_path, monkeypatch, spec)


ROWS = [{"id": f"ex-{i}", "text": f"example text {i}", "label": "ab"[i % 2]} for i in range(60)]


def test_a_passing_gate_locks_the_test_set_at_the_contract_path(tmp_path, monkeypatch):
    ctx = context(tmp_path, ROWS, monkeypatch)
    local = data.read(ctx)
    data.encode(PlainRecipe(), local)  # type: ignore[arg-type]
    data.gate(ctx, PlainRecipe(), local)  # type: ignore[arg-type]
    assert ctx.gate_passed and ctx.labels == ["a", "b"]
    assert ctx.quality is not None and ctx.quality.outcome() == (trainer_api.QUALITY_PASSED, "")
    report = json.loads(Path(ctx.cfg.artifact_uri, trainer_api.ARTIFACT_DATA_QUALITY).read_text())
    assert report["passed"] and report["split"]["test"] == len(local.test) > 0
    manifest = Path(trainer_api.test_set_manifest(ctx.cfg.model_uri, 1))
    locked = LockedTestSet.from_json(manifest.read_bytes(), str(manifest))
    assert set(locked.ids) == {i for i, _, _ in local.test}
    assert ctx.locked is not None and ctx.locked.fingerprint == locked.fingerprint
    # Every row is in exactly one part, and this (only) rank keeps all of train/validation.
    assert len(local.train_text) + len(local.val_text) + len(local.test) == len(ROWS)


def test_a_failed_gate_writes_its_report_and_locks_nothing(tmp_path, monkeypatch):
    rows = [*ROWS, {"id": "ex-0", "text": "another text", "label": "a"}]
    ctx = context(tmp_path, rows, monkeypatch)
    local = data.read(ctx)
    with pytest.raises(DataQualityFailed, match="ids must be present and unique") as info:
        data.gate(ctx, PlainRecipe(), local)  # type: ignore[arg-type]
    assert info.value.checks == "failed: ids"
    assert not ctx.gate_passed
    report = json.loads(Path(ctx.cfg.artifact_uri, trainer_api.ARTIFACT_DATA_QUALITY).read_text())
    assert report["failed"] == ["ids"]
    assert not Path(trainer_api.test_set_manifest(ctx.cfg.model_uri, 1)).exists()


def test_a_split_without_validation_fails_as_data_quality(tmp_path, monkeypatch):
    ctx = context(tmp_path, ROWS[:12], monkeypatch, validation=0.01, test=0.3)
    local = data.read(ctx)
    assert local.counts["validation"] == 0
    with pytest.raises(DataQualityFailed, match="validation examples") as info:
        data.gate(ctx, PlainRecipe(), local)  # type: ignore[arg-type]
    assert info.value.checks == "failed: split"
    assert not Path(trainer_api.test_set_manifest(ctx.cfg.model_uri, 1)).exists()
