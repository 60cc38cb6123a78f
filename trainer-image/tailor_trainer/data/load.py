"""Reading labelled examples from CSV, JSONL or Parquet, in S3 or on a local path.

Files are spooled to local disk (S3 objects are downloaded as streams, never held in memory)
and then read in record batches with pyarrow, projecting only the columns the spec names. So a
rank holds one batch at a time, plus whatever it decides to keep (its own shard).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from tailor.api.trainingjob import Data

from tailor_trainer.errors import REASON_DATA_UNREADABLE, PermanentError
from tailor_trainer.storage import Store, is_s3

Format = Literal["csv", "jsonl", "parquet"]
_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
}
BATCH_ROWS = 4096

Batch = dict[str, list[str | None]]
"""Column name -> values as strings (None where missing) for one record batch."""


@dataclass(frozen=True)
class DataFile:
    uri: str
    format: Format


@dataclass(frozen=True)
class ColumnMap:
    """The columns a recipe reads, by role."""

    id: str
    input: str
    label: str
    group: str | None
    annotators: tuple[str, ...]

    @classmethod
    def from_spec(cls, data: Data) -> ColumnMap:
        cols = data.columns
        input_col = cols.text or cols.image
        if input_col is None:
            raise PermanentError("InvalidSpec", "data.columns.text or data.columns.image is "
                                 "required by the built-in recipes")
        return cls(id=cols.id, input=input_col, label=cols.label, group=cols.group,
                   annotators=tuple(cols.annotators or ()))

    def names(self) -> list[str]:
        out = [self.id, self.input, self.label]
        if self.group:
            out.append(self.group)
        out.extend(self.annotators)
        return list(dict.fromkeys(out))

    def field_of(self, column: str) -> str:
        roles = {self.id: "id", self.input: "text/image", self.label: "label"}
        if self.group:
            roles[self.group] = "group"
        for name in self.annotators:
            roles[name] = "annotators"
        return f"data.columns.{roles.get(column, column)}"


def _format_of(name: str, declared: str) -> Format | None:
    if declared != "auto":
        return declared  # type: ignore[return-value]
    lower = name.lower()
    for ext, fmt in _EXTENSIONS.items():
        if lower.endswith(ext):
            return fmt
    return None


def resolve_files(store: Store, data: Data) -> list[DataFile]:
    """The data files at data.uri: the object itself, or every data file under the prefix."""
    uri = data.uri
    objects = list(store.list(uri))
    exact = [o for o in objects if o.uri == uri]
    if not exact:
        prefix = uri if uri.endswith("/") else uri + "/"
        exact = [o for o in objects if o.uri.startswith(prefix)]
    files: list[DataFile] = []
    for obj in exact:
        name = obj.uri.rsplit("/", 1)[-1]
        if name.startswith((".", "_")):
            continue
        fmt = _format_of(name, data.format)
        if fmt is not None:
            files.append(DataFile(obj.uri, fmt))
    if not files:
        where = "object or prefix" if is_s3(uri) else "file or directory"
        raise PermanentError(REASON_DATA_UNREADABLE,
                             f"no CSV, JSONL or Parquet data found at data.uri {uri} (no such "
                             f"{where}, or no file with a .csv, .jsonl or .parquet extension)")
    return files


def local_copy(store: Store, file: DataFile, work_dir: Path) -> Path:
    if not is_s3(file.uri):
        return Path(file.uri)
    digest = hashlib.sha256(file.uri.encode()).hexdigest()[:16]
    path = work_dir / "data" / f"{digest}-{file.uri.rsplit('/', 1)[-1]}"
    if not path.exists():
        store.download(file.uri, path)
    return path


def _check_columns(file: DataFile, present: list[str], columns: ColumnMap) -> None:
    missing = [c for c in columns.names() if c not in present]
    if missing:
        what = ", ".join(f"{c!r} ({columns.field_of(c)})" for c in missing)
        raise PermanentError(REASON_DATA_UNREADABLE,
                             f"{file.uri}: missing column {what}; the file has "
                             f"{', '.join(repr(p) for p in present) or 'no columns'}")


def _to_lists(batch: pa.RecordBatch | pa.Table, file: DataFile,
              columns: ColumnMap) -> Batch:
    out: Batch = {}
    for name in columns.names():
        column = batch.column(name)
        try:
            if not pa.types.is_string(column.type):
                column = column.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise PermanentError(REASON_DATA_UNREADABLE,
                                 f"{file.uri}: column {name!r} ({columns.field_of(name)}) has "
                                 f"type {column.type}, which is not text-like: {exc}") from exc
        out[name] = column.to_pylist()
    return out


def _batches_of(path: Path, file: DataFile, columns: ColumnMap) -> Iterator[Batch]:
    if path.stat().st_size == 0:
        raise PermanentError(REASON_DATA_UNREADABLE, f"{file.uri}: the file is empty")
    if file.format == "csv":
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in columns.names()},
                strings_can_be_null=True,
            ),
        )
        _check_columns(file, reader.schema.names, columns)
        for batch in reader:
            yield _to_lists(batch, file, columns)
    elif file.format == "jsonl":
        table = pajson.read_json(path, read_options=pajson.ReadOptions(block_size=1 << 22))
        _check_columns(file, table.column_names, columns)
        for batch in table.select(columns.names()).to_batches(BATCH_ROWS):
            yield _to_lists(batch, file, columns)
    else:
        parquet = pq.ParquetFile(path)
        _check_columns(file, parquet.schema_arrow.names, columns)
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns.names()):
            yield _to_lists(batch, file, columns)


def iter_batches(store: Store, files: list[DataFile], columns: ColumnMap,
                 work_dir: Path) -> Iterator[tuple[DataFile, Batch]]:
    """Every record batch of every file, in a deterministic order (files by URI)."""
    for file in sorted(files, key=lambda f: f.uri):
        path = local_copy(store, file, work_dir)
        try:
            for batch in _batches_of(path, file, columns):
                yield file, batch
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PermanentError(REASON_DATA_UNREADABLE,
                                 f"{file.uri}: malformed {file.format.upper()} data: "
                                 f"{detail}") from exc
