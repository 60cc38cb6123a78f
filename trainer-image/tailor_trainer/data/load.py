"""Reading labelled examples from CSV, JSONL or Parquet, in S3 or on a local path.

Files are spooled to local disk (S3 objects are downloaded as streams, never held in memory)
and then read in record batches with pyarrow, projecting only the columns the spec names. So a
rank holds one batch at a time, plus whatever it decides to keep (its own shard).

data.additionalUris are read after data.uri, with the same format and columns, except that
their group and annotator columns may be missing (e.g. labelled production examples, which a
DriftMonitor writes with the id, the model's input and the label). An id names one example: a
row of an additional URI whose id already occurred (in data.uri or an earlier additional URI)
is left out (``KnownIds``), so the curated row wins and a test example can never come back
into training under its own id.

data.productionUris are read last, like additional URIs, and must also hold the timestamp
column (data.columns.timestamp): the recent holdout is their most recent part
(``tailor_trainer.data.holdout``). A production file without it fails the data-quality gate.
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
from tailor_contract.trainingjob import Data
from tailor_contract.uris import is_s3

from tailor_trainer.errors import (
    REASON_DATA_UNREADABLE,
    REASON_INVALID_SPEC,
    DataQualityFailed,
    PermanentError,
)
from tailor_trainer.storage import Store

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
    source: int = 0
    """0 for data.uri, then one number per URI of additionalUris and productionUris, in order."""
    production: bool = False
    """A file of data.productionUris (which is additional too: never part of the test set)."""

    @property
    def additional(self) -> bool:
        return self.source > 0


@dataclass(frozen=True)
class ColumnMap:
    """The columns a recipe reads, by role."""

    id: str
    input: str
    label: str
    group: str | None
    annotators: tuple[str, ...]
    timestamp: str | None = None
    """data.columns.timestamp when the spec has productionUris (read from those files only)."""

    @classmethod
    def from_spec(cls, data: Data) -> ColumnMap:
        cols = data.columns
        input_col = cols.text or cols.image
        if input_col is None:
            raise PermanentError(REASON_INVALID_SPEC, "data.columns.text or data.columns.image is "
                                 "required by the built-in recipes")
        return cls(id=cols.id, input=input_col, label=cols.label, group=cols.group,
                   annotators=tuple(cols.annotators or ()),
                   timestamp=cols.timestamp if data.production_uris else None)

    def required(self) -> list[str]:
        """The columns every file of data.additionalUris must have."""
        return list(dict.fromkeys([self.id, self.input, self.label]))

    def names_of(self, file: DataFile) -> list[str]:
        """The columns read from one file: a production file's timestamp too."""
        if file.production and self.timestamp:
            return list(dict.fromkeys([*self.names(), self.timestamp]))
        return self.names()

    def names(self) -> list[str]:
        out = [self.id, self.input, self.label]
        if self.group:
            out.append(self.group)
        out.extend(self.annotators)
        return list(dict.fromkeys(out))

    def field_of(self, column: str) -> str:
        roles = {self.id: "id", self.input: "text/image", self.label: "label"}
        if self.timestamp:
            roles[self.timestamp] = "timestamp"
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
    return _resolve(store, data.uri, data.format, 0, "data.uri")


def resolve_all(store: Store, data: Data) -> list[DataFile]:
    """The files of data.uri, then those of each of data.additionalUris and productionUris."""
    fields = ["data.uri", *(f"data.additionalUris[{i}]" for i in range(len(
        data.additional_uris or []))), *(f"data.productionUris[{i}]" for i in range(len(
            data.production_uris or [])))]
    return [file for source, (uri, field) in enumerate(zip(data.uris(), fields, strict=True))
            for file in _resolve(store, uri, data.format, source, field)]


def resolve_production(store: Store, data: Data) -> list[DataFile]:
    """The files of data.productionUris alone (numbered as in `resolve_all`)."""
    return [file for file in resolve_all(store, data) if file.production] if (
        data.production_uris) else []


def _resolve(store: Store, uri: str, declared: str, source: int, field: str) -> list[DataFile]:
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
        fmt = _format_of(name, declared)
        if fmt is not None:
            files.append(DataFile(obj.uri, fmt, source, field.startswith("data.productionUris")))
    if not files:
        where = "object or prefix" if is_s3(uri) else "file or directory"
        raise PermanentError(REASON_DATA_UNREADABLE,
                             f"no CSV, JSONL or Parquet data found at {field} {uri} (no such "
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


def _check_columns(file: DataFile, present: list[str], columns: ColumnMap) -> list[str]:
    """The columns to read from this file (all of them must be there, except the optional
    ones of an additional file)."""
    needed = columns.required() if file.additional else columns.names()
    if file.production and columns.timestamp and columns.timestamp not in present:
        raise DataQualityFailed(
            f"{file.uri}: production data without the timestamp column "
            f"{columns.timestamp!r} (data.columns.timestamp); every row of data.productionUris "
            "needs the time it was predicted, which decides the recent holdout. The file has "
            f"{', '.join(repr(p) for p in present) or 'no columns'}", "failed: timestamps")
    missing = [c for c in needed if c not in present]
    if missing:
        what = ", ".join(f"{c!r} ({columns.field_of(c)})" for c in missing)
        raise PermanentError(REASON_DATA_UNREADABLE,
                             f"{file.uri}: missing column {what}; the file has "
                             f"{', '.join(repr(p) for p in present) or 'no columns'}")
    return [c for c in columns.names_of(file) if c in present]


def _to_lists(batch: pa.RecordBatch | pa.Table, file: DataFile,
              columns: ColumnMap) -> Batch:
    out: Batch = {}
    for name in columns.names_of(file):
        if name not in batch.schema.names:  # an optional column of an additional file
            out[name] = [None] * batch.num_rows
            continue
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
                column_types={c: pa.string() for c in columns.names_of(file)},
                strings_can_be_null=True,
            ),
        )
        _check_columns(file, reader.schema.names, columns)
        for batch in reader:
            yield _to_lists(batch, file, columns)
    elif file.format == "jsonl":
        table = pajson.read_json(path, read_options=pajson.ReadOptions(block_size=1 << 22))
        present = _check_columns(file, table.column_names, columns)
        for batch in table.select(present).to_batches(BATCH_ROWS):
            yield _to_lists(batch, file, columns)
    else:
        parquet = pq.ParquetFile(path)
        present = _check_columns(file, parquet.schema_arrow.names, columns)
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=present):
            yield _to_lists(batch, file, columns)


def iter_batches(store: Store, files: list[DataFile], columns: ColumnMap,
                 work_dir: Path) -> Iterator[tuple[DataFile, Batch]]:
    """Every record batch of every file, in a deterministic order: data.uri's files by URI,
    then each additional URI's."""
    for file in sorted(files, key=lambda f: (f.source, f.uri)):
        path = local_copy(store, file, work_dir)
        try:
            for batch in _batches_of(path, file, columns):
                yield file, batch
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PermanentError(REASON_DATA_UNREADABLE,
                                 f"{file.uri}: malformed {file.format.upper()} data: "
                                 f"{detail}") from exc


def id_digest(example_id: str) -> bytes:
    """The 12-byte digest an id is remembered by (the quality gate's duplicates, KnownIds)."""
    return hashlib.blake2b(example_id.encode(), digest_size=12).digest()


class KnownIds:
    """The ids read so far (as `id_digest`s), so that an additional URI's row whose id already
    names an example is left out."""

    def __init__(self) -> None:
        self._digests: set[bytes] = set()

    def add(self, batch: Batch, id_column: str) -> None:
        for example_id in batch[id_column]:
            if example_id is not None and example_id.strip():
                self._digests.add(id_digest(example_id))

    def new_rows(self, batch: Batch, id_column: str) -> tuple[Batch, int]:
        """The batch without rows whose id is already known (those ids become known); and how
        many were left out. Rows without an id are kept: the quality gate reports them."""
        keep: list[int] = []
        for i, example_id in enumerate(batch[id_column]):
            if example_id is None or not example_id.strip():
                keep.append(i)
                continue
            key = id_digest(example_id)
            if key not in self._digests:
                self._digests.add(key)
                keep.append(i)
        left_out = len(batch[id_column]) - len(keep)
        if not left_out:
            return batch, 0
        return {name: [values[i] for i in keep] for name, values in batch.items()}, left_out
