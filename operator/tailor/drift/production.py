"""A window's labelled production examples, as training data for a retrain.

When a DriftMonitor retrains with ``retrain.includeProductionData``, the predictions of the
check's window that have a ground-truth label become the retrain's labelled production data:
the model's inputs as logged, the label from the ground-truth log, the prediction's id and the
prediction's time. The window and the join by id are the ones a check uses (``in_window``,
``LabelIndex.join``), so the retrain learns from exactly the examples whose accuracy triggered
it. The time is what the trainer orders the rows by to hold out the most recent ones and judge
the retrain there (its recent holdout), so it is written in one unambiguous form (RFC 3339,
UTC, microseconds) whatever form the log used, and a row without one is left out.

Rows stream: each prediction batch is filtered, joined and appended to one Parquet object as a
row group, so memory holds one batch, the labels (which the check holds too) and the ids
written so far (at most ``MAX_ROWS``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tailor.drift.accuracy import LabelIndex
from tailor.drift.logs import resolve
from tailor.drift.window import in_window, to_micros

MAX_ROWS = 1_000_000
"""At most this many labelled production rows go into one retrain (the earliest in log order);
more would outweigh a curated training set many times over, and the operator keeps their ids
in memory to write each example once."""


@dataclass(frozen=True)
class ProductionColumns:
    """Which prediction-log columns become which training-data columns."""

    log_id: str
    """The prediction log's id column (the ground-truth log's ids refer to it)."""
    log_timestamp: str
    id: str
    """The training data's id column (data.columns.id of the retrain)."""
    label: str
    """The training data's label column (data.columns.label of the retrain)."""
    inputs: tuple[str, ...]
    """Columns copied under the same name: the model's inputs (and a group column)."""
    required: tuple[str, ...] = ()
    """Inputs a row cannot be trained on without (the text or image column)."""
    log_label: str = "label"
    """The ground-truth log's label column."""
    timestamp: str | None = None
    """The training data's timestamp column (data.columns.timestamp of the retrain): the
    prediction's time, from the log's ``log_timestamp``. None writes no time (and requires
    none)."""

    def output_names(self) -> list[str]:
        """id, the inputs, the timestamp, the label (each once; the id, timestamp and label
        columns are filled from the logs even when an input has the same name)."""
        own = (self.id, self.timestamp, self.label)
        names = [self.id, *(c for c in self.inputs if c not in own),
                 *([self.timestamp] if self.timestamp else []), self.label]
        return list(dict.fromkeys(names))


@dataclass
class LabelledExamples:
    """Iterate to get the window's labelled rows as tables of strings (``output_names``).

    Counters fill in as the iteration goes: ``rows`` yielded, ``skipped`` labelled rows left out
    (a required input missing or empty, no timestamp when one is written, or an id already
    written), ``truncated`` when ``max_rows`` stopped it.
    """

    predictions: Iterable[pa.RecordBatch | pa.Table]
    labels: LabelIndex
    columns: ProductionColumns
    window_start: datetime | None = None
    window_end: datetime | None = None
    max_rows: int = MAX_ROWS
    rows: int = 0
    skipped: int = 0
    truncated: bool = False

    def __iter__(self) -> Iterator[pa.Table]:
        cols = self.columns
        names = cols.output_names()
        start, end = to_micros(self.window_start), to_micros(self.window_end)
        seen: set[str] = set()
        for batch in self.predictions:
            if self.truncated:
                return
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            table, micros = in_window(table, cols.log_timestamp, start, end)
            if table.num_rows == 0 or cols.log_id not in table.column_names:
                continue
            rows, truth = self.labels.join(table[cols.log_id])
            if rows.size == 0:
                continue
            picked = table.take(pa.array(rows))
            out: dict[str, pa.ChunkedArray] = {}
            for name in names:
                source = cols.log_id if name == cols.id else name
                if name == cols.label:
                    out[name] = truth
                elif name == cols.timestamp:
                    out[name] = _rfc3339(None if micros is None else micros[rows], len(rows))
                elif source in picked.column_names:
                    out[name] = _strings(picked[source])
                else:
                    out[name] = pa.chunked_array([pa.nulls(picked.num_rows, pa.string())])
            result = pa.table(out)
            keep = self._keep(result, names[0], seen)
            result = result.filter(pa.array(keep, pa.bool_()))
            if result.num_rows > self.max_rows - self.rows:
                result = result.slice(0, self.max_rows - self.rows)
                self.truncated = True
            self.rows += result.num_rows
            if result.num_rows:
                yield result

    def _keep(self, table: pa.Table, id_name: str, seen: set[str]) -> list[bool]:
        ok = pc.is_valid(table[id_name])
        if self.columns.timestamp:
            ok = pc.and_(ok, pc.is_valid(table[self.columns.timestamp]))
        for name in self.columns.required:
            value = table[name]
            ok = pc.and_(ok, pc.and_(pc.is_valid(value),
                                     pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(
                                         value.fill_null(""))), 0)))
        keep: list[bool] = []
        for usable, example_id in zip(ok.to_pylist(), table[id_name].to_pylist(), strict=True):
            if usable and example_id not in seen:
                seen.add(example_id)
                keep.append(True)
            else:
                self.skipped += 1
                keep.append(False)
        return keep


def write_parquet(tables: Iterable[pa.Table], uri: str,
                  filesystem: pafs.FileSystem | None = None) -> int:
    """Append each table to one Parquet object at ``uri`` (``s3://`` or a local path) as it
    comes, so memory holds one table. Nothing is written when no table has rows; an existing
    object is replaced. Returns the rows written."""
    writer: pq.ParquetWriter | None = None
    sink = None
    rows = 0
    fs, path = resolve(uri, filesystem)
    try:
        for table in tables:
            if table.num_rows == 0:
                continue
            if writer is None:
                if fs.type_name != "s3":  # S3 has no folders to make (MinIO would add markers)
                    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
                sink = fs.open_output_stream(path)
                writer = pq.ParquetWriter(sink, table.schema)
            writer.write_table(table)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
        if sink is not None:
            sink.close()
    return rows


def write_window(predictions: Iterable[pa.RecordBatch | pa.Table],
                 ground_truth: Iterable[pa.RecordBatch | pa.Table], columns: ProductionColumns,
                 uri: str, filesystem: pafs.FileSystem | None = None, *,
                 window_start: datetime | None = None, window_end: datetime | None = None,
                 max_rows: int = MAX_ROWS) -> LabelledExamples:
    """Write a window's labelled examples to one Parquet object at ``uri``: the ground truth
    read in full (latest label per id, as a check reads it), the predictions streamed. Returns
    the examples, whose counters say what was written (``rows``, ``skipped``, ``truncated``)."""
    labels = LabelIndex.from_batches(ground_truth, id_column=columns.log_id,
                                     label_column=columns.log_label,
                                     timestamp_column=columns.log_timestamp)
    examples = LabelledExamples(predictions, labels, columns, window_start=window_start,
                                window_end=window_end, max_rows=max_rows)
    write_parquet(examples, uri, filesystem)
    return examples


def _rfc3339(micros: npt.NDArray[np.int64] | None, n: int) -> pa.ChunkedArray:
    """Times as RFC 3339 strings in UTC with microseconds (``2030-01-01T11:59:00.000000Z``);
    null where the log had none (``epoch_micros`` marks those with int64's minimum)."""
    if micros is None:
        return pa.chunked_array([pa.nulls(n, pa.string())])
    missing = micros == np.iinfo(np.int64).min
    times = pa.array(micros, pa.timestamp("us", tz="UTC"), mask=missing)
    return pa.chunked_array([pc.strftime(times, format="%Y-%m-%dT%H:%M:%SZ")])


def _strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A column as strings, as the trainer reads every column (stable across log files whose
    JSON types were inferred differently)."""
    if pa.types.is_string(column.type):
        return column
    if pa.types.is_large_string(column.type) or pa.types.is_dictionary(column.type):
        return column.cast(pa.string())
    if pa.types.is_null(column.type):
        return pa.chunked_array([pa.nulls(len(column), pa.string())])
    try:
        return column.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Nested values (lists, structs): their JSON-like text.
        return pa.chunked_array([pa.array([None if v is None else str(v)
                                           for v in column.to_pylist()], pa.string())])
