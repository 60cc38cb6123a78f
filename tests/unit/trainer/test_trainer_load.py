"""Reading CSV, JSONL and Parquet from local paths, with clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tailor.api.trainingjob import Data
from tailor_trainer.data.load import ColumnMap, iter_batches, resolve_files
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
