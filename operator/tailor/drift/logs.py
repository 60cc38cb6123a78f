"""Reading prediction and label logs (Parquet or JSONL, on S3 or local disk) as arrow batches.

S3 needs a pyarrow filesystem that knows the store's endpoint and credentials: the operator
makes it (``tailor.io.objectstore.s3_filesystem``) and passes it in. Batches stream: a Parquet
file is read a row group at a time and only the requested columns are fetched, so a check's
memory does not grow with the window. One thread reads the next row group (or JSONL file) while
the caller works on the current one: at most two are held at once.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq
from tailor_contract import uris

LogFormat = Literal["auto", "jsonl", "parquet"]

_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")


class ParquetColumns(Mapping[str, pa.ChunkedArray]):
    """The columns of Parquet data (one file or every Parquet file under a prefix), each read
    from storage only when asked for.

    ``build_reference_profile(ParquetColumns(uri), ...)`` profiles a reference table one column
    at a time: quantile edges need a whole column, but never two, so the profile's memory is one
    column's rather than the table's. Columns are read again on every access; nothing is cached.
    """

    def __init__(self, uri: str, *, filesystem: pafs.FileSystem | None = None) -> None:
        self._fs, path = resolve(uri, filesystem)
        self._files = [f for f in _list_files(self._fs, path) if _detect(f) == "parquet"]
        if not self._files:
            raise FileNotFoundError(f"no Parquet files at {uri}")
        self._types: dict[str, pa.DataType] = {}
        self.num_rows = 0
        for file_path in self._files:
            with self._fs.open_input_file(file_path) as source:
                parquet = pq.ParquetFile(source)
                self.num_rows += parquet.metadata.num_rows
                for column in parquet.schema_arrow:
                    self._types.setdefault(column.name, column.type)

    def __getitem__(self, name: str) -> pa.ChunkedArray:
        kind = self._types[name]  # KeyError for a column no file has
        chunks: list[pa.Array] = []
        for table in _tables(self._fs, self._files, "parquet", [name]):
            if name in table.column_names:
                chunks += table[name].cast(kind).chunks
            else:  # a file without the column: its rows are missing values
                chunks.append(pa.nulls(table.num_rows, kind))
        return pa.chunked_array(chunks, kind)

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)


def read_log_batches(
    uri: str,
    *,
    format: LogFormat = "auto",
    columns: Sequence[str] | None = None,
    filesystem: pafs.FileSystem | None = None,
    batch_size: int = 131_072,
) -> Iterator[pa.RecordBatch]:
    """Yield the record batches of every log file under ``uri`` (a prefix or one object).

    ``uri`` is ``s3://bucket/prefix`` (with the store's ``filesystem``) or a local path.
    ``format="auto"`` decides per file from its extension: ``.parquet`` or JSON lines
    (``.jsonl``, ``.json``, ``.ndjson``, optionally gzipped). Columns missing from a file are
    simply absent from its batches.
    """
    fs, path = resolve(uri, filesystem)
    for table in _read_ahead(_tables(fs, _list_files(fs, path), format, columns)):
        yield from table.to_batches(max_chunksize=batch_size)


def _tables(
    fs: pafs.FileSystem, files: list[str], format: LogFormat, columns: Sequence[str] | None
) -> Generator[pa.Table, None, None]:
    """Each Parquet row group, or each JSONL file, as a table of the requested columns."""
    # Coalesced, parallel range reads hide an object store's latency; on local disk they only
    # cost memory.
    pre_buffer = not isinstance(fs, pafs.LocalFileSystem)
    for file_path in files:
        kind = format if format != "auto" else _detect(file_path)
        if kind is None:
            continue
        if kind == "parquet":
            with fs.open_input_file(file_path) as source:
                parquet = pq.ParquetFile(source, pre_buffer=pre_buffer)
                names = parquet.schema_arrow.names
                present = [c for c in columns if c in names] if columns else None
                for group in range(parquet.num_row_groups):
                    yield parquet.read_row_group(group, columns=present, use_threads=True)
        else:
            with fs.open_input_stream(file_path, compression="detect") as stream:
                table = pajson.read_json(stream)
            if columns:
                table = table.select([c for c in columns if c in table.column_names])
            yield table


def _read_ahead(tables: Generator[pa.Table, None, None]) -> Iterator[pa.Table]:
    """Yield ``tables`` while one thread already reads the next (arrow releases the GIL)."""
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tailor-log-read")
    try:
        upcoming = reader.submit(next, tables, None)
        while (table := upcoming.result()) is not None:
            upcoming = reader.submit(next, tables, None)
            yield table
    finally:
        # A caller that stops early: let the read in flight finish, then close the open file.
        reader.shutdown(wait=True)
        tables.close()


def resolve(uri: str, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str]:
    """The filesystem (the given one, else the local disk) and the path in it. An ``s3://``
    URI needs the store's filesystem: which endpoint and credentials is the caller's to say."""
    if uris.is_s3(uri):
        if filesystem is None:
            raise ValueError(f"{uri} is on S3: pass the store's pyarrow filesystem")
        return filesystem, uris.S3Uri.parse(uri).path
    return (filesystem or pafs.LocalFileSystem()), uri


def _list_files(fs: pafs.FileSystem, path: str) -> list[str]:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [path]
    if info.type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path.rstrip("/"), recursive=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def _detect(path: str) -> Literal["jsonl", "parquet"] | None:
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    return None
