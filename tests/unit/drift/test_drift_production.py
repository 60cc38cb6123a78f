"""A retrain's production data: the window's predictions joined with their latest labels."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tailor.drift.accuracy import LabelIndex
from tailor.drift.production import LabelledExamples, ProductionColumns, write_parquet
from tailor_contract.names import production_data_uri

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
COLUMNS = ProductionColumns(log_id="request", log_timestamp="ts", id="id", label="label",
                            inputs=("text", "length"), required=("text",))


def predictions() -> list[pa.Table]:
    base = T0.timestamp()
    first = pa.table({
        "request": ["r1", "r2", "r3", "r4", "old"],
        "ts": [base + 1, base + 2, base + 3, base + 4, base - 10],
        "text": ["one", "two", None, "four", "before the window"],
        "length": [3, 3, 0, 4, 17],
        "prediction": ["a", "b", "a", "a", "b"],
    })
    second = pa.table({  # another file: r2 again (a retried request), r5 unlabelled, r6 fine
        "request": ["r2", "r5", "r6"],
        "ts": [base + 5, base + 6, base + 7],
        "text": ["two again", "five", "six"],
        "length": [9.5, 4.0, 3.0],
        "prediction": ["b", "b", "a"],
    })
    return [first, second]


def labels() -> LabelIndex:
    return LabelIndex.from_batches([pa.table({
        "request": ["r1", "r2", "r3", "r4", "r6", "old", "r1"],
        "label": ["b", "b", "a", "a", "a", "a", "a"],
        "ts": [1, 1, 1, 1, 1, 1, 2],  # r1's label is corrected later
    })], id_column="request", label_column="label", timestamp_column="ts")


def test_labelled_rows_of_the_window_with_the_latest_label_renamed_for_training() -> None:
    examples = LabelledExamples(predictions(), labels(), COLUMNS, window_start=T0,
                                window_end=T0.replace(minute=5))
    table = pa.concat_tables(list(examples))
    assert table.column_names == ["id", "text", "length", "label"]
    assert table.to_pylist() == [
        {"id": "r1", "text": "one", "length": "3", "label": "a"},
        {"id": "r2", "text": "two", "length": "3", "label": "b"},
        {"id": "r4", "text": "four", "length": "4", "label": "a"},
        {"id": "r6", "text": "six", "length": "3", "label": "a"},
    ]
    # r3 has no text (the model's input) and r2 was already written: left out; r5 has no
    # label and "old" is outside the window: never candidates.
    assert examples.rows == 4 and examples.skipped == 2 and not examples.truncated


def test_the_cap_keeps_the_first_rows_in_log_order() -> None:
    examples = LabelledExamples(predictions(), labels(), COLUMNS, window_start=T0, max_rows=2)
    assert [r["id"] for t in examples for r in t.to_pylist()] == ["r1", "r2"]
    assert examples.truncated and examples.rows == 2


def test_written_once_as_parquet_and_nothing_without_rows(tmp_path: Path) -> None:
    target = tmp_path / "production-data" / "m-retrain-1.parquet"
    rows = write_parquet(LabelledExamples(predictions(), labels(), COLUMNS, window_start=T0),
                         str(target))
    assert rows == 4
    written = pq.read_table(target)
    assert written.num_rows == 4 and written.column_names == ["id", "text", "length", "label"]
    # The same trigger again (an operator restart): the same object, the same rows.
    write_parquet(LabelledExamples(predictions(), labels(), COLUMNS, window_start=T0),
                  str(target))
    assert pq.read_table(target).equals(written)
    empty = tmp_path / "none.parquet"
    nothing = LabelledExamples(predictions(), labels(), COLUMNS,
                               window_start=T0.replace(year=2030))
    assert write_parquet(nothing, str(empty)) == 0 and not empty.exists()


def test_a_missing_optional_column_is_null_and_a_log_without_ids_gives_nothing() -> None:
    cols = ProductionColumns(log_id="request", log_timestamp="ts", id="id", label="label",
                             inputs=("text", "group"), required=("text",))
    rows = [r for t in LabelledExamples(predictions(), labels(), cols) for r in t.to_pylist()]
    assert rows[0] == {"id": "r1", "text": "one", "group": None, "label": "a"}
    no_ids = [pa.table({"ts": [T0.timestamp()], "text": ["x"]})]
    assert list(LabelledExamples(no_ids, labels(), cols)) == []


def test_the_object_lives_beside_the_model() -> None:
    assert production_data_uri("s3://models/out/", "news", "mon-retrain-1a2b3c4d") == \
        "s3://models/out/news/production-data/mon-retrain-1a2b3c4d.parquet"


STAMPED = ProductionColumns(log_id="request", log_timestamp="ts", id="id", label="label",
                            inputs=("text",), required=("text",), timestamp="timestamp")


def test_the_predictions_time_is_written_as_rfc3339_whatever_the_log_used() -> None:
    examples = LabelledExamples(predictions(), labels(), STAMPED, window_start=T0,
                                window_end=T0.replace(minute=5))
    rows = [r for t in examples for r in t.to_pylist()]
    assert [(r["id"], r["timestamp"]) for r in rows] == [
        ("r1", "2026-03-01T12:00:01.000000Z"), ("r2", "2026-03-01T12:00:02.000000Z"),
        ("r4", "2026-03-01T12:00:04.000000Z"), ("r6", "2026-03-01T12:00:07.000000Z")]
    assert list(rows[0]) == ["id", "text", "timestamp", "label"]
    # ISO strings with an offset and arrow timestamps give the same form, in UTC.
    for ts in (pa.array(["2026-03-01T13:00:01.5+01:00"]),
               pa.array([T0.replace(second=1, microsecond=500000)],
                        pa.timestamp("ms", tz="UTC"))):
        log = [pa.table({"request": ["r1"], "ts": ts, "text": ["one"]})]
        [row] = [r for t in LabelledExamples(log, labels(), STAMPED) for r in t.to_pylist()]
        assert row["timestamp"] == "2026-03-01T12:00:01.500000Z"


def test_a_row_without_a_time_is_left_out_and_counted() -> None:
    # A log without the timestamp column keeps every row in the window (as a check does), but
    # a retrain cannot order such rows for its recent holdout: they are skipped, not written
    # with an empty time that would fail the retrain's data-quality gate.
    untimed = [pa.table({"request": ["r1", "r2"], "text": ["one", "two"]})]
    examples = LabelledExamples(untimed, labels(), STAMPED)
    assert list(examples) == [] and (examples.rows, examples.skipped) == (0, 2)
    nulls = [pa.table({"request": ["r1", "r2"], "ts": [T0.timestamp(), None],
                       "text": ["one", "two"]})]
    examples = LabelledExamples(nulls, labels(), STAMPED)
    assert [r["id"] for t in examples for r in t.to_pylist()] == ["r1"]
    assert examples.skipped == 1


def test_the_same_window_writes_the_same_object(tmp_path: Path) -> None:
    target = tmp_path / "m-retrain-1.parquet"
    written = []
    for _ in range(2):  # the trigger again after a restart: replaced, row for row
        write_parquet(LabelledExamples(predictions(), labels(), STAMPED, window_start=T0),
                      str(target))
        written.append(pq.read_table(target))
    assert written[0].column_names == ["id", "text", "timestamp", "label"]
    assert written[0]["id"].to_pylist() == ["r1", "r2", "r4", "r6"]
    assert written[1].equals(written[0])
