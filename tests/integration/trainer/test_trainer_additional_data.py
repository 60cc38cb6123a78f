"""data.additionalUris on the stack: labelled production examples, written by the operator's own
writer (tailor.drift.production), are read after data.uri; they train and validate but never
enter the test set, and a row whose id already names an example is left out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from conftest import S3, Trainer, to_csv
from tailor.drift.accuracy import LabelIndex
from tailor.drift.production import LabelledExamples, ProductionColumns, write_parquet
from tailor.io.objectstore import s3_filesystem

MODEL = "with-production-data"
WORDS = {"business": "market shares profit bank", "sport": "match goal team league",
         "tech": "software chip phone internet"}


def curated() -> list[dict[str, Any]]:
    return [{"id": f"{c}-{i}", "text": f"{WORDS[c]} story {i} {c}", "label": c}
            for c in WORDS for i in range(12)]


def production(s3: S3, name: str, rows: list[tuple[str, str, str]]) -> str:
    """Prediction log + labels -> the operator's production-data object; its URI."""
    now = datetime.now(UTC).timestamp()
    log = pa.table({"request_id": [r[0] for r in rows], "timestamp": [now] * len(rows),
                    "text": [r[1] for r in rows], "prediction": ["sport"] * len(rows)})
    labels = LabelIndex.from_batches([pa.table({"request_id": [r[0] for r in rows],
                                                "label": [r[2] for r in rows]})],
                                     id_column="request_id", timestamp_column=None)
    columns = ProductionColumns(log_id="request_id", log_timestamp="timestamp", id="id",
                                label="label", inputs=("text",), required=("text",))
    uri = s3.uri(f"models/{MODEL}/production-data/{name}.parquet")
    fs = s3_filesystem(endpoint=s3.endpoint, access_key=s3.access, secret_key=s3.secret)
    assert write_parquet(LabelledExamples(log.to_batches(), labels, columns), uri, fs) == \
        len(rows)
    return uri


def spec(trainer: Trainer, s3: S3, data_uri: str, extra: list[str], base: str) -> Any:
    return trainer.spec(MODEL, data_uri, base, data={
        "uri": data_uri, "additionalUris": extra,
        "columns": {"id": "id", "text": "text", "label": "label"},
        "quality": {"minExamples": 20, "classBalance": {"minPerClass": 2}}})


def test_production_rows_train_but_never_test(trainer: Trainer, s3: S3, tiny_model) -> None:
    main = s3.put(f"data/{MODEL}/curated.csv", to_csv(curated()))
    main_ids = {r["id"] for r in curated()}
    fresh = [(f"prod-{c}-{i}", f"{WORDS[c]} customer note {i}", c) for c in WORDS
             for i in range(10)]
    first = production(s3, "retrain-1", fresh)

    # Run 1 (no locked test set yet): the test set is drawn from data.uri alone.
    result = trainer.run(trainer.env(spec(trainer, s3, main, [first], str(tiny_model)),
                                     "run-1"), timeout=240)
    assert result.code == 0, result.log[-4000:]
    locked_key = f"models/{MODEL}/test-sets/v1/manifest.json"
    locked = s3.json(locked_key)
    test_ids = {e["id"] for e in locked["examples"]}
    assert test_ids and test_ids <= main_ids
    quality = s3.json(f"models/{MODEL}/runs/run-1/data-quality.json")
    assert quality["examples"] == 36 + 30
    assert quality["additional"] == {"uris": [first], "rows": 30, "leftOut": 0}
    assert quality["split"]["test"] == len(test_ids)
    assert quality["split"]["train"] + quality["split"]["validation"] == 66 - len(test_ids)

    # Run 2: a later window whose log reuses a locked test id (with other text, which as a test
    # example would fail the run as TestSetChanged) and a curated training id; both are left
    # out, the new rows train or validate, and the test set is the same.
    test_id = sorted(test_ids)[0]
    train_id = sorted(main_ids - test_ids)[0]
    later = [(f"prod2-{c}-{i}", f"{WORDS[c]} later note {i}", c) for c in WORDS
             for i in range(4)]
    second = production(s3, "retrain-2", [*later, (test_id, "a different text", "tech"),
                                          (train_id, "another different text", "sport")])
    result2 = trainer.run(trainer.env(spec(trainer, s3, main, [second], str(tiny_model)),
                                      "run-2"), timeout=240)
    assert result2.code == 0, result2.log[-4000:]
    assert s3.json(locked_key) == locked
    quality2 = s3.json(f"models/{MODEL}/runs/run-2/data-quality.json")
    assert quality2["additional"] == {"uris": [second], "rows": 12, "leftOut": 2}
    assert quality2["examples"] == 36 + 12 and quality2["passed"]
    assert quality2["split"]["test"] == len(test_ids)
    metrics2 = s3.json(f"models/{MODEL}/runs/run-2/metrics.json")
    assert metrics2["testSet"]["fingerprint"] == locked["fingerprint"]
    assert metrics2["test"]["candidate"]["examples"] == len(test_ids)
