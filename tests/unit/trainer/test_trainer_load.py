"""Reading CSV, JSONL and Parquet from local paths, with clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tailor_contract.trainingjob import Data
from tailor_trainer.data.load import (
    Batch,
    ColumnMap,
    KnownIds,
    iter_batches,
    resolve_all,
    resolve_files,
)
from tailor_trainer.errors import PermanentError
from tailor_trainer.storage import Store

ROWS = [{"id": 1, "text": "hello, world", "label": "a"}, {"id": 2, "text": "line\nbreak", "label": "b"}]


def read(uri: str, tmp_path: Path, fmt: str = "auto"):
    data = Data.model_validate({"uri": uri, "format": fmt, "columns": {"text": "text"}})
    store = Store()
    files = resolve_files(store, data)
    batches = [b for _, b in iter_batches(store, files, ColumnMap.from_spec(data), tmp_path)]
    return {k: [v for b in batches for v in b[k]] for k in ("id", "text", "label")}


def write_csv(path: Path) -> None:
    path.write_text('id,text,label\n1,"hello, world",a\n2,"line\nbreak",b\n')


def test_csv_jsonl_and_parquet_read_the_same(tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    expected = {"id": ["1", "2"], "text": ["hello, world", "line\nbreak"], "label": ["a", "b"]}
    for name in ("d.csv", "d.jsonl", "d.parquet"):
        assert read(str(tmp_path / name), tmp_path / "work") == expected, name


def test_a_prefix_reads_every_data_file_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    write_csv(folder / "b.csv")
    (folder / "a.jsonl").write_text(json.dumps({"id": "0", "text": "t", "label": "a"}) + "\n")
    (folder / "_SUCCESS").write_text("")
    assert read(str(folder), tmp_path / "work")["id"] == ["0", "1", "2"]


def test_missing_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("id,text\n1,x\n")
    with pytest.raises(PermanentError, match=r"missing column 'label' \(data.columns.label\)"):
        read(str(tmp_path / "d.csv"), tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("")
    with pytest.raises(PermanentError, match="the file is empty"):
        read(str(tmp_path / "d.csv"), tmp_path)


def test_malformed_csv_row(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("id,text,label\n1,x,a\n2,y,b,extra\n")
    with pytest.raises(PermanentError, match=r"malformed CSV data: .*Expected 3 columns"):
        read(str(tmp_path / "d.csv"), tmp_path)


def test_malformed_jsonl(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"id": 1, "text": "x", "label": "a"}\n{"id": 2, "text\n')
    with pytest.raises(PermanentError, match="malformed JSONL data"):
        read(str(tmp_path / "d.jsonl"), tmp_path)


def test_nothing_at_the_uri(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="no CSV, JSONL or Parquet data found"):
        read(str(tmp_path / "nothing.csv"), tmp_path)


def test_additional_uris_are_read_after_data_uri_and_may_lack_optional_columns(
        tmp_path: Path) -> None:
    main = [{"id": "b", "text": "main b", "label": "x", "g": "1", "a1": "x", "a2": "x"},
            {"id": "a", "text": "main a", "label": "y", "g": "2", "a1": "y", "a2": "x"}]
    (tmp_path / "main").mkdir()
    pq.write_table(pa.Table.from_pylist(main), tmp_path / "main" / "z.parquet")
    # Production data: id, input and label only (no group, no annotators), read after data.uri
    # even though its path sorts first.
    pq.write_table(pa.Table.from_pylist([{"id": "p1", "text": "prod", "label": "x"}]),
                   tmp_path / "a-production.parquet")
    data = Data.model_validate({
        "uri": str(tmp_path / "main"), "additionalUris": [str(tmp_path / "a-production.parquet")],
        "columns": {"text": "text", "group": "g", "annotators": ["a1", "a2"]}})
    store = Store()
    files = resolve_all(store, data)
    assert [(f.source, f.additional) for f in files] == [(0, False), (1, True)]
    batches = list(iter_batches(store, files, ColumnMap.from_spec(data), tmp_path / "work"))
    assert [b["id"] for _, b in batches] == [["b", "a"], ["p1"]]
    assert batches[1][1] == {"id": ["p1"], "text": ["prod"], "label": ["x"], "g": [None],
                             "a1": [None], "a2": [None]}


def test_additional_uris_must_have_id_input_and_label(tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv")
    (tmp_path / "extra.csv").write_text("id,text\n9,no label\n")
    data = Data.model_validate({"uri": str(tmp_path / "d.csv"),
                                "additionalUris": [str(tmp_path / "extra.csv")],
                                "columns": {"text": "text"}})
    store = Store()
    with pytest.raises(PermanentError, match=r"extra\.csv: missing column 'label'"):
        list(iter_batches(store, resolve_all(store, data), ColumnMap.from_spec(data), tmp_path))
    missing = Data.model_validate({"uri": str(tmp_path / "d.csv"),
                                   "additionalUris": [str(tmp_path / "none")],
                                   "columns": {"text": "text"}})
    with pytest.raises(PermanentError, match=r"data.additionalUris\[0\]"):
        resolve_all(store, missing)


def test_known_ids_leave_out_rows_that_repeat_an_id() -> None:
    known = KnownIds()
    known.add({"id": ["1", "2", None]}, "id")
    batch: Batch = {"id": ["2", "3", "3", "", "4"], "text": ["a", "b", "c", "d", "e"]}
    kept, left_out = known.new_rows(batch, "id")
    # "2" is data.uri's, the second "3" repeats the first; a row without an id stays for the
    # quality gate to report.
    assert kept == {"id": ["3", "", "4"], "text": ["b", "d", "e"]} and left_out == 2
    assert known.new_rows({"id": ["4", "5"]}, "id") == ({"id": ["5"]}, 1)


def test_production_uris_are_read_last_with_their_timestamps(tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv")
    (tmp_path / "extra.csv").write_text("id,text,label\n9,extra,a\n")
    pq.write_table(pa.Table.from_pylist([{"id": "p1", "text": "prod", "label": "b",
                                          "timestamp": "2026-11-01T00:00:00Z"}]),
                   tmp_path / "a-production.parquet")
    data = Data.model_validate({"uri": str(tmp_path / "d.csv"),
                                "additionalUris": [str(tmp_path / "extra.csv")],
                                "productionUris": [str(tmp_path / "a-production.parquet")],
                                "columns": {"text": "text"}})
    store = Store()
    files = resolve_all(store, data)
    assert [(f.source, f.additional, f.production) for f in files] == [
        (0, False, False), (1, True, False), (2, True, True)]
    columns = ColumnMap.from_spec(data)
    assert columns.timestamp == "timestamp" and "timestamp" not in columns.names()
    batches = list(iter_batches(store, files, columns, tmp_path / "work"))
    assert [b["id"] for _, b in batches] == [["1", "2"], ["9"], ["p1"]]
    assert "timestamp" not in batches[0][1]
    assert batches[2][1]["timestamp"] == ["2026-11-01T00:00:00Z"]
    missing = Data.model_validate({"uri": str(tmp_path / "d.csv"),
                                   "productionUris": [str(tmp_path / "none")],
                                   "columns": {"text": "text"}})
    with pytest.raises(PermanentError, match=r"data.productionUris\[0\]"):
        resolve_all(store, missing)
