"""Small runtime pieces: batch plans, the metrics endpoint, termination messages, the launcher."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest
from tailor_contract import trainer_api
from tailor_trainer import launch
from tailor_trainer.metrics import Progress
from tailor_trainer.run import write_termination
from tailor_trainer.schedule import batch_plan, lr_lambda
from tailor_trainer.storage import Store


def test_batch_plan_is_deterministic_complete_and_bucketed() -> None:
    lengths = [(i * 37) % 500 + 1 for i in range(1000)]
    plan = batch_plan(lengths, 16, seed=1, epoch=0)
    assert plan == batch_plan(lengths, 16, seed=1, epoch=0)
    assert plan != batch_plan(lengths, 16, seed=1, epoch=1)
    assert sorted(i for b in plan for i in b) == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plan) / len(plan)
    assert spread < 60  # random batches would spread over about 450


def test_learning_rate_warms_up_then_decays() -> None:
    f = lr_lambda(total=100, warmup=10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5) and f(100) == 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_rank0_metrics_use_the_contract_names() -> None:
    progress = Progress()
    port = free_port()
    assert progress.serve(port)
    progress.update(step=5, total=20, epoch=0.25, loss=1.5, samples=64)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values[trainer_api.METRIC_STEP] == 5
    assert values[trainer_api.METRIC_TOTAL_STEPS] == 20
    assert values[trainer_api.METRIC_EPOCH] == 0.25
    assert values[trainer_api.METRIC_LOSS] == 1.5
    assert trainer_api.METRIC_SAMPLES_PER_SECOND in values
    assert trainer_api.METRIC_ETA_SECONDS in values


def test_termination_message_is_written_or_skipped(tmp_path: Path) -> None:
    summary = trainer_api.TerminationSummary(outcome="Failed", reason="DataQualityFailed",
                                          message="x" * 10000, permanent=True)
    path = tmp_path / "termination-log"
    write_termination(str(path), summary)
    parsed = trainer_api.TerminationSummary.parse(path.read_text())
    assert parsed is not None and parsed.permanent and parsed.reason == "DataQualityFailed"
    assert len(path.read_bytes()) <= trainer_api.TERMINATION_MESSAGE_LIMIT
    write_termination(str(tmp_path / "missing-dir" / "log"), summary)  # no error


def test_launcher_fallback_summary_only_when_nothing_was_written(tmp_path: Path,
                                                                  monkeypatch) -> None:
    path = tmp_path / "log"
    monkeypatch.setenv("TAILOR_TERMINATION_LOG", str(path))
    launch.write_fallback_summary([-9, 0], 137)
    first = json.loads(path.read_text())
    assert first["reason"] == "WorkerFailed" and "[-9, 0]" in first["message"]
    path.write_text('{"outcome":"Failed","reason":"Preempted"}')
    launch.write_fallback_summary([75, 0], 75)
    assert json.loads(path.read_text())["reason"] == "Preempted"


def test_local_store_writes_atomically_and_once(tmp_path: Path) -> None:
    store = Store()
    target = str(tmp_path / "a" / "b.json")
    assert store.put_bytes(target, b"1", if_absent=True)
    assert not store.put_bytes(target, b"2", if_absent=True)
    assert store.get_bytes(target) == b"1"
    store.put_bytes(target, b"3")
    assert store.get_bytes(target) == b"3"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.json"]  # no temp files left
