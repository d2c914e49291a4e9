"""Parquet and Arrow tables (IPC files, and IPC streams on stdin), read batch by batch.

The same rules as CSV: ``--columns`` by name or index, ``--id-column`` carried through
(any type, its values kept), a model picks its columns by name; integer, float, decimal
and bool columns become float32; a null, NaN or inf is an error naming the row and the
column unless ``--allow-nan`` drops its row; a column of text or lists among the
features is refused by name. Parquet is read a row group (batch) at a time, so memory
stays flat however large the file.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from aecli.errors import DataError
from aecli.io.columns import select_columns
from aecli.io.ids import as_arrow, kept
from aecli.io.table import ReadOptions, ReadStats, Table, chunk_rows_for

PARQUET_MAGIC = b"PAR1"
ARROW_FILE_MAGIC = b"ARROW1"
ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"  # an IPC stream's first message
SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow", ".feather": "arrow"}
# What stdin holds, by its first bytes.
_COPY_BLOCK = 4 * 2**20  # stdin is spooled in blocks of this many bytes
MAGIC = ((ARROW_STREAM_MAGIC, "stream"), (ARROW_FILE_MAGIC, "arrow"), (PARQUET_MAGIC, "parquet"))


def iter_arrow(
    source: Path | IO[bytes], kind: str, name: str, opts: ReadOptions, stats: ReadStats, rows: int
) -> Iterator[Table]:
    """The table's rows in chunks of at most ``rows`` (and 2M values) rows."""
    schema, batches = _open(source, kind, name, rows)
    names = [str(n) for n in schema.names]
    features, id_index = select_columns(opts, names, len(names), name, False)
    for index in features:
        check_numbers(schema.field(index), name)
    columns = [names[i] for i in features]
    id_name = names[id_index] if id_index is not None else None
    step = chunk_rows_for(len(features), rows)
    start, yielded = 0, False
    for batch in batches:
        for offset in range(0, batch.num_rows, step):
            part = batch.slice(offset, step)
            table = _chunk(part, features, id_index, columns, id_name, start, name, opts, stats)
            start += part.num_rows
            if table is not None:
                yielded = True
                yield table
    if not yielded:
        raise DataError("no rows" if start == 0 else "no rows left without NaN", source=name)


def _open(source: Path | IO[bytes], kind: str, name: str, rows: int) -> tuple[Any, Iterator[Any]]:
    """The schema and the record batches, read lazily; a damaged file is a DataError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if kind == "parquet":
            if not isinstance(source, Path):  # stdin: the footer is at the end; spool it
                source = spooled_stdin(source)  # type: ignore[assignment]
            # pre_buffer=False: pyarrow's read-ahead kept about a file's worth of memory
            # (+110 MB for a 77 MB file); without it 30x the rows cost +17 MB.
            handle = pq.ParquetFile(source, pre_buffer=False)
            return handle.schema_arrow, _guarded(handle.iter_batches(batch_size=rows), name)
        if kind == "arrow":  # an IPC file is read by its footer: stdin is taken whole
            # Read, not memory-mapped: every mapped page touched counts as resident memory
            # (+52 MB encoding 1M x 32 rows against 100k; read, a batch at a time).
            opened = pa.OSFile(str(source)) if isinstance(source, Path) else None
            opened = opened or pa.PythonFile(spooled_stdin(source), mode="r")  # type: ignore[arg-type]
            try:
                reader = pa.ipc.open_file(opened)
                count = reader.num_record_batches
                return reader.schema, _guarded((reader.get_batch(i) for i in range(count)), name)
            except pa.ArrowInvalid:
                if not isinstance(source, Path):
                    raise
                opened = pa.OSFile(str(source))  # a stream written to a .arrow file
        else:  # an IPC stream: read as it arrives
            opened = pa.OSFile(str(source)) if isinstance(source, Path) else source
        stream = pa.ipc.open_stream(opened)
        return stream.schema, _guarded(iter(stream), name)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(
            f"not a readable {_what(kind)} file ({short_text(exc)})", source=name
        ) from None


def spooled_stdin(stream: IO[bytes]) -> IO[bytes]:
    """stdin's bytes in an unnamed temporary file (gone when closed, or when the process is).

    A Parquet or Arrow IPC *file* is found by its footer, at the end: read on stdin it was
    held in memory whole (findings4 #7). Copied in blocks, then read a batch at a time.
    """
    spool = tempfile.TemporaryFile(prefix="aecli-stdin-")  # noqa: SIM115 - the caller's now
    shutil.copyfileobj(stream, spool, _COPY_BLOCK)
    spool.seek(0)
    return spool


def _guarded(batches: Iterator[Any], name: str) -> Iterator[Any]:
    """A file damaged past its header fails while its batches are read: say so, by name."""
    import pyarrow as pa

    try:
        yield from batches
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"damaged or truncated data ({short_text(exc)})", source=name) from None


def check_numbers(field: Any, name: str) -> None:
    import pyarrow as pa

    kind = field.type
    if pa.types.is_dictionary(kind):  # pandas' Categorical of numbers, in an Arrow file
        kind = kind.value_type
    numeric = (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_null(kind)
    )
    if not numeric:
        raise DataError(
            f"column {field.name!r} holds {kind}, not numbers "
            f"(carry text with --id-column {field.name}, or leave it out with --exclude "
            f"{field.name})",
            source=name,
        )


def _chunk(
    batch: Any,
    features: list[int],
    id_index: int | None,
    columns: list[str],
    id_name: str | None,
    start: int,
    name: str,
    opts: ReadOptions,
    stats: ReadStats,
) -> Table | None:
    """One batch as float32 rows; a missing or non-finite value fails, or drops its row."""

    values, missing, wide = floats32([batch.column(i) for i in features])
    bad = missing | ~np.isfinite(values)
    ids = None if id_index is None else batch.column(id_index)  # as read: its type kept
    if not bad.any():
        return Table(values, columns, (len(columns),), ids, id_name)
    if not opts.allow_nan:
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{bad_value(missing, wide, values, row, col)} at row {start + row}, column "
            f"{columns[col]!r} (--allow-nan drops such rows)",
            source=name,
        )
    keep = ~bad.any(axis=1)
    stats.dropped += int((~keep).sum())
    if not keep.any():
        return None
    kept_ids = None if ids is None else kept(ids, keep)
    return Table(values[keep], columns, (len(columns),), kept_ids, id_name)


def floats32(arrays: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numeric Arrow columns as float32 rows, by CSV's rule for every type.

    Returns the values, where a value is null, and the float64 values (before the cast
    to float32, to name a value that overflows it as CSV does). Integers beyond 2^53
    round to the nearest float64 as CSV's parser rounds them (a safe cast refused them:
    findings4 #6); a dictionary of numbers is decoded first.
    """
    import pyarrow as pa

    rows = len(arrays[0]) if arrays else 0
    values = np.empty((rows, len(arrays)), dtype=np.float32)
    missing = np.zeros(values.shape, dtype=bool)
    wide = np.empty(values.shape, dtype=np.float64)
    for j, array in enumerate(arrays):
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        if pa.types.is_null(array.type):
            missing[:, j] = True
            wide[:, j] = np.nan
            continue
        wide[:, j] = array.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        with np.errstate(over="ignore"):
            values[:, j] = wide[:, j]
        missing[:, j] = array.is_null().to_numpy(zero_copy_only=False)
    return values, missing, wide


def bad_value(missing: Any, wide: Any, values: Any, row: int, col: int) -> str:
    """The words for a value that cannot be used: CSV's, where CSV has them."""
    if missing[row, col]:
        return "a null (missing) value"
    if np.isfinite(wide[row, col]):
        return f"{wide[row, col]:g} overflows float32"
    return f"{values[row, col]}"


def _what(kind: str) -> str:
    return {"parquet": "Parquet", "arrow": "Arrow IPC", "stream": "Arrow IPC stream"}[kind]


def short_text(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


class ArrowSink:
    """A typed table written batch by batch: float32 columns, the id column first as it was.

    Parquet gets a row group per batch, Arrow an IPC file of record batches; the caller's
    file object is an AtomicFile, so the table appears whole or not at all.
    """

    def __init__(
        self,
        file: IO[bytes],
        kind: str,
        columns: list[str],
        id_name: str | None,
        integers: tuple[int, ...] = (),
    ):
        self.file, self.kind, self.columns, self.id_name = file, kind, columns, id_name
        self.integers = integers  # 0/1 flags: int8 columns
        self.writer: Any = None

    def write(self, values: np.ndarray, ids: Any) -> None:
        import pyarrow as pa

        arrays = [
            pa.array(np.asarray(values[:, j], np.int8 if j in self.integers else np.float32))
            for j in range(values.shape[1])
        ]
        names = list(self.columns)
        if self.id_name is not None:
            arrays.insert(0, as_arrow(ids))  # the reader's array: its type and values kept
            names.insert(0, self.id_name)
        batch = pa.record_batch(arrays, names=names)
        if self.writer is None:
            self.writer = self._open(batch.schema)
        self.writer.write_batch(batch)

    def _open(self, schema: Any) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.kind == "parquet":
            return pq.ParquetWriter(self.file, schema)
        return pa.ipc.new_file(self.file, schema)

    def finish(self) -> None:
        if self.writer is None:  # no rows: an empty table with the columns still
            import pyarrow as pa

            fields = [
                pa.field(c, pa.int8() if j in self.integers else pa.float32())
                for j, c in enumerate(self.columns)
            ]
            if self.id_name is not None:
                fields.insert(0, pa.field(self.id_name, pa.string()))
            self.writer = self._open(pa.schema(fields))
        self.writer.close()
