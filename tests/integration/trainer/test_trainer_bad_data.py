"""Bad data and bad configuration: each stops the run with the permanent exit code, a message
naming the problem, and nothing half-written in S3."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import S3, Trainer, to_csv
from tailor_contract import trainer_api
from tailor_contract.trainer_api import EXIT_PERMANENT
from tailor_trainer.data.split import content_digest, fingerprint

CLASSES = ("business", "sport", "tech")
WORDS = {"business": "market shares profit bank", "sport": "match goal team league",
         "tech": "software chip phone internet"}


def rows(per_class: int = 12, classes=CLASSES) -> list[dict[str, Any]]:
    return [{"id": f"{c}-{i}", "text": f"{WORDS[c]} story {i} {c}", "label": c}
            for c in classes for i in range(per_class)]


@dataclass
class Case:
    name: str
    reason: str
    message: str  # a regular expression the termination message must match
    data: Callable[[], bytes] = lambda: to_csv(rows())
    spec: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    nproc: int = 1
    setup: Callable[[S3, str], None] | None = None
    data_key: str | None = None  # read from another key than the one uploaded


def with_annotators() -> bytes:
    rng = random.Random(0)
    data = [{**r, "r1": rng.choice(CLASSES), "r2": rng.choice(CLASSES)} for r in rows()]
    return to_csv(data)


def stale_manifest(s3: S3, model: str) -> None:
    ids = {f"gone-{i}": content_digest(f"gone-{i}", "old text", "sport") for i in range(3)}
    manifest = {"format": 1, "version": 1, "seed": 42, "createdByRun": "old", "count": 3,
                "fingerprint": fingerprint(ids.values()), "groups": [],
                "examples": [{"id": i, "sha256": d} for i, d in sorted(ids.items())]}
    s3.put(f"models/{model}/test-sets/v1/manifest.json", json.dumps(manifest).encode())


CASES = [
    Case("missing-label-column", "DataUnreadable",
         r"missing column 'label' \(data.columns.label\)",
         data=lambda: to_csv([{k: v for k, v in r.items() if k != "label"} for r in rows()])),
    Case("unknown-labels", "DataQualityFailed", r"labels outside data.labels .*'weather'",
         data=lambda: to_csv([*rows(), {"id": "w", "text": "rain", "label": "weather"}]),
         spec={"labels": list(CLASSES)}, nproc=2),
    Case("empty-file", "DataUnreadable", r"the file is empty", data=lambda: b""),
    Case("malformed-rows", "DataUnreadable", r"malformed CSV data: .*Expected 3 columns",
         data=lambda: to_csv(rows()) + b'x-1,"text",sport,surplus\n'),
    Case("one-class", "DataQualityFailed", r"1 distinct label.* at least two",
         data=lambda: to_csv(rows(40, ("sport",)))),
    Case("annotators-disagree", "DataQualityFailed",
         r"inter-annotator agreement \(cohen_kappa\) is -?0\.\d+ .*minimum is 0.667",
         data=with_annotators, spec={"columns": {"text": "text", "annotators": ["r1", "r2"]}}),
    Case("conflicting-duplicates", "DataQualityFailed",
         r"share their input with an example of another label",
         data=lambda: to_csv([*rows(), {"id": "dup", "text": "market shares profit bank story "
                                                             "1 business", "label": "tech"}])),
    Case("duplicate-ids", "DataQualityFailed", r"repeated ids \(e.g. 'sport-3'\)",
         data=lambda: to_csv([*rows(), {"id": "sport-3", "text": "other", "label": "tech"}])),
    Case("too-few-examples", "DataQualityFailed", r"36 labelled examples, the minimum is 500",
         spec={"quality": {"minExamples": 500}}),
    Case("test-manifest-changed", "TestSetChanged",
         r"no longer matches the locked test set .*3 missing", setup=stale_manifest, nproc=2),
    Case("unreadable-s3-object", "DataUnreadable", r"no CSV, JSONL or Parquet data found",
         data_key="data/does-not-exist.csv"),
    Case("wrong-credentials", "StorageAccessDenied", r"S3 refused to .*(InvalidAccessKeyId|"
         r"SignatureDoesNotMatch|AccessDenied|403)",
         env={"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, nproc=2),
    Case("invalid-spec", "InvalidSpec", r"spec\.hyperparameters\.learningRate",
         spec={"hyperparameters": {"learningRate": 0}}),
    Case("base-model-missing", "BaseModelUnusable", r"spec.model.base .* holds no files",
         spec={"model": "missing-base"}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_permanently_and_leaves_nothing(case: Case, trainer: Trainer, s3: S3,
                                                         tiny_model) -> None:
    model = f"bad-{case.name}"
    key = f"data/{model}/data.csv"
    s3.put(key, case.data())
    data = {"uri": s3.uri(case.data_key or key),
            "columns": {"id": "id", "text": "text", "label": "label"},
            "quality": {"minExamples": 20, "classBalance": {"minPerClass": 2}}}
    overrides: dict[str, Any] = {}
    for k, v in case.spec.items():
        if k in ("labels", "columns"):
            data[k] = v
        elif k == "quality":
            data["quality"] = {**data["quality"], **v}
        elif k == "model" and v == "missing-base":
            overrides["model"] = {"name": model, "base": s3.uri("base-models/nothing-here/")}
        else:
            overrides[k] = v
    spec = trainer.spec(model, data["uri"], str(tiny_model), data=data, **overrides)
    if case.setup is not None:
        case.setup(s3, model)
    before = {k: s3.get(k) for k in s3.keys(f"models/{model}/")}
    result = trainer.run(trainer.env(spec, "run-1", **case.env), nproc=case.nproc, timeout=240)

    assert result.code == EXIT_PERMANENT, result.log[-3000:]
    assert result.summary is not None, result.log[-3000:]
    assert result.summary.outcome == "Failed" and result.summary.permanent
    assert result.summary.reason == case.reason, result.summary
    assert re.search(case.message, result.summary.message), result.summary.message
    # Nothing half-written: no run manifest, no model, no new test manifest, no production
    # pointer; the only new object allowed is the data-quality report of a failed gate.
    after = {k: s3.get(k) for k in s3.keys(f"models/{model}/")}
    new = sorted(set(after) - set(before))
    assert new in ([], [f"models/{model}/runs/run-1/data-quality.json"]), new
    assert all(after[k] == v for k, v in before.items())
    if case.reason == "DataQualityFailed":
        report = json.loads(after[f"models/{model}/runs/run-1/data-quality.json"])
        assert report["passed"] is False and report["failed"]
        # The violated checks reach the operator (the DataQualityPassed condition), from any
        # rank count: with two processes the error travels from rank 0 to rank 1 and back.
        assert result.summary.data_quality == trainer_api.QUALITY_FAILED
        assert result.summary.data_quality_message.startswith(
            "failed: " + ", ".join(report["failed"])), result.summary
    elif case.reason == "TestSetChanged":  # after the gate passed: its outcome is reported
        assert result.summary.data_quality in (trainer_api.QUALITY_PASSED,
                                               trainer_api.QUALITY_WARNINGS), result.summary
