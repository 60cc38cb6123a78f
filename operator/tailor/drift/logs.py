"""Reading prediction and label logs (Parquet or JSONL, on S3 or local disk) as arrow batches.

Batches stream: a Parquet file is read a row group at a time and only the requested columns are
fetched, so a check's memory does not grow with the window.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.json as pajson

LogFormat = Literal["auto", "jsonl", "parquet"]

_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")


def s3_filesystem(
    *,
    endpoint: str | None = None,
    region: str = "us-east-1",
    access_key: str | None = None,
    secret_key: str | None = None,
    session_token: str | None = None,
) -> pafs.S3FileSystem:
    """An arrow S3 filesystem for AWS S3 or an S3-compatible store such as MinIO.

    Without keys, arrow's default chain (environment, IRSA web identity, instance profile) is used.
    """
    kwargs: dict[str, object] = {"region": region}
    if endpoint:
        scheme, _, rest = endpoint.partition("://")
        kwargs["endpoint_override"] = rest or scheme
        kwargs["scheme"] = scheme if rest else "https"
    if access_key and secret_key:
        kwargs.update(access_key=access_key, secret_key=secret_key, session_token=session_token)
    return pafs.S3FileSystem(**kwargs)


def read_log_batches(
    uri: str,
    *,
    format: LogFormat = "auto",
    columns: Sequence[str] | None = None,
    filesystem: pafs.FileSystem | None = None,
    batch_size: int = 131_072,
) -> Iterator[pa.RecordBatch]:
    """Yield the record batches of every log file under ``uri`` (a prefix or one object).

    ``uri`` is ``s3://bucket/prefix`` (with ``filesystem`` from ``s3_filesystem`` for custom
    endpoints) or a local path. ``format="auto"`` decides per file from its extension:
    ``.parquet`` or JSON lines (``.jsonl``, ``.json``, ``.ndjson``, optionally gzipped). Columns
    missing from a file are simply absent from its batches.
    """
    fs, path = _resolve(uri, filesystem)
    for file_path in _list_files(fs, path):
        kind = format if format != "auto" else _detect(file_path)
        if kind is None:
            continue
        if kind == "parquet":
            dataset = ds.dataset(file_path, format="parquet", filesystem=fs)
            present = [c for c in columns if c in dataset.schema.names] if columns else None
            yield from dataset.to_batches(columns=present, batch_size=batch_size)
        else:
            with fs.open_input_stream(file_path, compression="detect") as stream:
                table = pajson.read_json(stream)
            if columns:
                table = table.select([c for c in columns if c in table.column_names])
            yield from table.to_batches(max_chunksize=batch_size)


def _resolve(uri: str, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str]:
    if uri.startswith("s3://"):
        path = uri.removeprefix("s3://")
        return (filesystem or pafs.S3FileSystem()), path
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
