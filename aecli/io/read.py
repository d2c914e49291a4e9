"""Reading tables: CSV/TSV (optionally gzipped) and NPY, files or stdin, in chunks.

Reading yields float32 chunks so that encode and reconstruct can stream;
every failure is a DataError naming the file, line and column.
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from aecli.errors import DataError
from aecli.io.arrow import MAGIC as ARROW_MAGIC
from aecli.io.arrow import SUFFIXES as ARROW_SUFFIXES
from aecli.io.arrow import iter_arrow
from aecli.io.cells import is_number, lazy_pandas, to_floats
from aecli.io.columns import picker, select_columns
from aecli.io.ids import concat as concat_ids
from aecli.io.jsonl import SUFFIXES as JSONL_SUFFIXES
from aecli.io.jsonl import iter_jsonl
from aecli.io.lines import NumberedLines, decoded_lines, guard_read, line_text
from aecli.io.live import live_lines
from aecli.io.npy import iter_npy
from aecli.io.table import (
    _DELIMITERS,
    _GZIP_MAGIC,
    _NPY_MAGIC,
    CHUNK_ROWS,
    STDIO,
    ReadOptions,
    ReadStats,
    Table,
    chunk_rows_for,
    describe,
)


def read_table(source: str, *, stats: ReadStats | None = None, **options: Any) -> Table:
    """Read a whole table into memory (training needs every row at once)."""
    chunks = list(iter_table(source, stats=stats, **options))
    first = chunks[0]
    values = chunks[0].values if len(chunks) == 1 else np.concatenate([c.values for c in chunks])
    ids = None if first.ids is None else concat_ids([c.ids for c in chunks])
    return Table(values, first.columns, first.row_shape, ids, first.id_name)


def iter_table(
    source: str,
    *,
    chunk_rows: int | None = None,
    stats: ReadStats | None = None,
    **options: Any,
) -> Iterator[Table]:
    """Yield the table in chunks of at most ``chunk_rows`` rows, in order.

    ``options`` are the fields of ReadOptions. The first chunk is read before
    anything is yielded, so a source with no data rows fails before a caller
    opens its output.
    """
    opts = ReadOptions(**options)
    stats = stats if stats is not None else ReadStats()
    reader = _Reader(describe(source), opts, stats, chunk_rows or CHUNK_ROWS)
    if source == STDIO:
        yield from reader.stream(sys.stdin.buffer)
        return
    yield from reader.path(Path(source))


class _Reader:
    """One read of one source: the options, the counters and the format dispatch."""

    def __init__(self, name: str, opts: ReadOptions, stats: ReadStats, chunk_rows: int) -> None:
        self.name = name
        self.opts = opts
        self.stats = stats
        self.chunk_rows = chunk_rows

    def path(self, path: Path) -> Iterator[Table]:
        name = self.name
        if not path.exists():
            raise DataError("no such file", source=name)
        if path.is_dir():
            raise DataError("is a directory, not a data file", source=name)
        suffixes = [s.lower() for s in path.suffixes[-2:]]
        if suffixes and suffixes[-1] == ".npy":
            yield from self.npy(path)
            return
        if suffixes and suffixes[-1] in JSONL_SUFFIXES:
            with guard_read(name), open(path, "rb") as raw:
                yield from iter_jsonl(
                    NumberedLines(raw), name, self.opts, self.stats, self.chunk_rows
                )
            return
        if suffixes and suffixes[-1] in ARROW_SUFFIXES:
            kind = ARROW_SUFFIXES[suffixes[-1]]
            yield from iter_arrow(path, kind, name, self.opts, self.stats, self.chunk_rows)
            return
        gz = bool(suffixes) and suffixes[-1] == ".gz"
        ext = suffixes[-2] if gz and len(suffixes) == 2 else (suffixes[-1] if suffixes else "")
        delimiter = self.opts.delimiter
        if delimiter is None:
            if ext not in _DELIMITERS:
                raise DataError(
                    "unknown data format; use .csv, .tsv (optionally .gz), .npy, .parquet, "
                    ".arrow or .jsonl, "
                    "or name the delimiter with --delimiter",
                    source=name,
                )
            delimiter = _DELIMITERS[ext]
        with guard_read(name):
            raw: IO[bytes] = gzip.open(path, "rb") if gz else open(path, "rb")  # noqa: SIM115
            with raw:
                yield from self.csv(raw, delimiter)

    def stream(self, stream: IO[bytes]) -> Iterator[Table]:
        """Stdin: gzip and NPY are recognised by their magic bytes, anything else is CSV."""
        with guard_read(self.name):
            buffered = stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore[arg-type]
            head = buffered.peek(8)[:8]  # type: ignore[union-attr]
            if head.startswith(_GZIP_MAGIC):
                inner = gzip.GzipFile(fileobj=buffered, mode="rb")
                yield from self.stream(inner)
                return
            if head.startswith(_NPY_MAGIC):
                yield from self.npy(buffered)  # streamed a chunk at a time (F10)
                return
            for magic, kind in ARROW_MAGIC:
                if head.startswith(magic):
                    yield from iter_arrow(buffered, kind, self.name, self.opts, self.stats,
                                          self.chunk_rows)  # fmt: skip
                    return
            lines = live_lines(buffered)
            if head.lstrip().startswith(b"{"):  # JSON Lines, by its first byte
                lines = lines if isinstance(lines, NumberedLines) else NumberedLines(lines)
                yield from iter_jsonl(lines, self.name, self.opts, self.stats, self.chunk_rows)
                return
            yield from self.csv(lines, self.opts.delimiter or ",")

    def csv(self, raw: IO[bytes] | NumberedLines, delimiter: str) -> Iterator[Table]:
        """CSV rows in chunks: pandas' C parser converts clean chunks, the csv module the rest.

        Lines are read and counted here, so chunks stream and every message can
        name its line. A chunk without quotes whose lines all have the header's
        field count goes to ``pandas.read_csv`` (6x numpy.loadtxt); a chunk it
        cannot convert cleanly (a bad cell, a gap, NaN) is parsed again by the
        exact path, which finds the bad cell or drops rows under ``allow_nan``.
        Once a quote appears, the rest of the file goes through the csv module,
        since a quoted field may span lines.
        """
        name = self.name
        # A quoted field may be long (a document, an embedding as text): the csv
        # module's 128 KiB default refused valid files that pandas reads (F21).
        csv.field_size_limit(_FIELD_LIMIT)
        lines = raw if isinstance(raw, NumberedLines) else NumberedLines(raw)
        head = lines.next_nonblank()
        if head is None:
            raise DataError("empty file: no rows", source=name)
        first_no, first = head
        first = first.removeprefix(_BOM)
        if b'"' in first or lazy_pandas() is None or len(delimiter) != 1:
            reader = csv.reader(
                decoded_lines([first], first_no, lines, name), delimiter=delimiter, strict=True
            )
            yield from self._exact(reader, first_no - 1, delimiter)
            return
        cells = line_text(first, first_no, name).rstrip("\r\n").split(delimiter)
        layout = self._layout(cells)
        self.chunk_rows = chunk_rows_for(layout.width, self.chunk_rows)
        pending = [] if layout.header else [first]
        start = first_no if pending else first_no + 1
        emitted = False
        while True:
            batch = pending + lines.take(self.chunk_rows - len(pending))
            pending = []
            if not batch:
                break
            numbers = range(start, start + len(batch))
            start += len(batch)
            blob = b"".join(batch)
            if b'"' in blob:  # one search of the chunk's bytes, not one a line
                reader = csv.reader(
                    decoded_lines(batch, numbers[0], lines, name), delimiter=delimiter, strict=True
                )
                for table in self._records(reader, numbers[0] - 1, layout):
                    emitted = True
                    yield table
                break
            table = self._fast(blob, len(batch), layout, delimiter)
            if table is None:
                kept = [(n, line) for n, line in zip(numbers, batch) if line.strip()]
                rows = [
                    line_text(line, n, name).rstrip("\r\n").split(delimiter) for n, line in kept
                ]
                table = self._rows_to_table(rows, [n for n, _ in kept], layout)
            if table is not None:
                emitted = True
                yield table
        if not emitted:
            self._nothing_left()

    def _exact(self, reader: Any, offset: int, delimiter: str) -> Iterator[Table]:
        """The csv module all the way (quoted header, or no pandas)."""
        first = next((row for row in reader if row), None)
        if first is None:
            raise DataError("empty file: no rows", source=self.name)
        layout = self._layout(first)
        self.chunk_rows = chunk_rows_for(layout.width, self.chunk_rows)
        first_rows = [] if layout.header else [(offset + reader.line_num, first)]
        emitted = False
        for table in self._records(reader, offset, layout, first_rows):
            emitted = True
            yield table
        if not emitted:
            self._nothing_left()

    def _nothing_left(self) -> None:
        if self.stats.dropped:
            raise DataError(
                f"no rows left after dropping {self.stats.dropped} with missing values",
                source=self.name,
            )
        raise DataError("no data rows, only a header", source=self.name)

    def _layout(self, first: list[str]) -> _Layout:
        """Header or not, and which columns are features and id, from the first record."""
        header = self.opts.header
        if header is None:
            header = not all(is_number(cell) for cell in first)
        names = [cell.strip() for cell in first] if header else None
        width = len(first)
        features, id_index = select_columns(self.opts, names, width, self.name)
        columns = [names[i] for i in features] if names is not None else None
        id_name = None
        if id_index is not None:
            id_name = names[id_index] if names is not None else f"col{id_index}"
        return _Layout(header, width, features, id_index, columns, id_name)

    def _records(
        self,
        reader: Any,
        offset: int,
        layout: _Layout,
        first_rows: list[tuple[int, list[str]]] | None = None,
    ) -> Iterator[Table]:
        """Chunks from csv-module records; line numbers are ``offset + reader.line_num``."""
        rows: list[list[str]] = [row for _, row in first_rows or []]
        numbers: list[int] = [n for n, _ in first_rows or []]
        while True:
            starts = offset + reader.line_num + 1  # where the next record begins (F21)
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                what = "a quote opened here is never closed" if "end of data" in str(exc) else exc
                raise DataError(f"malformed CSV ({what})", source=self.name, line=starts) from None
            if not row:
                continue
            rows.append(row)
            numbers.append(offset + reader.line_num)
            if len(rows) >= self.chunk_rows:
                table = self._rows_to_table(rows, numbers, layout)
                if table is not None:
                    yield table
                rows, numbers = [], []
        if rows:
            table = self._rows_to_table(rows, numbers, layout)
            if table is not None:
                yield table

    def _rows_to_table(
        self, rows: list[list[str]], numbers: list[int], layout: _Layout
    ) -> Table | None:
        """The exact path: field counts, then cell by cell where numpy cannot convert."""
        width = layout.width
        kept_rows, kept_numbers = [], []
        for row, number in zip(rows, numbers):
            if len(row) != width:
                raise DataError(
                    f"expected {width} fields, found {len(row)}", source=self.name, line=number
                )
            kept_rows.append(row)
            kept_numbers.append(number)
        if not kept_rows:
            return None
        pick = picker(layout.features, width)
        ids = [row[layout.id_index] for row in kept_rows] if layout.id_index is not None else None
        values = [pick(row) for row in kept_rows] if pick else kept_rows
        return self._chunk(
            values, kept_numbers, ids, layout.columns, layout.features, layout.id_name
        )

    def _fast(self, blob: bytes, count: int, layout: _Layout, delimiter: str) -> Table | None:
        """pandas' C parser for a clean chunk of ``count`` lines; None sends it to the exact path.

        Clean means: no blank line and every line has the header's field count,
        checked with numpy over the chunk's bytes rather than line by line.
        """
        pandas = lazy_pandas()
        if not blob.endswith(b"\n"):
            blob += b"\n"
        data = np.frombuffer(blob, dtype=np.uint8)
        ends = np.flatnonzero(data == ord("\n"))
        starts = np.concatenate(([0], ends[:-1] + 1))
        length = ends - starts
        blank = (length == 0) | ((length == 1) & (data[starts] == ord("\r")))
        if len(ends) != count or blank.any():
            return None  # a blank line: the exact path skips it
        returns = np.flatnonzero(data == ord("\r")) if b"\r" in blob else ends[:0]
        if len(returns) and not np.isin(returns, ends - 1).all():
            return None  # F08: a bare CR, which pandas would take for a line end
        # Delimiters before each line end, differenced: each line's count (a tenth of the
        # time of summing a 32-bit copy of the whole chunk by line).
        before_end = np.searchsorted(np.flatnonzero(data == ord(delimiter)), ends)
        fields = np.diff(before_end, prepend=0)
        if (fields != layout.width - 1).any():
            return None
        features, id_index = layout.features, layout.id_index
        usecols = features if id_index is None else [*features, id_index]
        dtype: dict[int, Any] = {i: np.float32 for i in features}
        if id_index is not None:
            dtype[id_index] = str
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")  # overflow is reported by the exact path
                frame = pandas.read_csv(
                    io.BytesIO(blob),
                    header=None,
                    sep=delimiter,
                    usecols=usecols,
                    dtype=dtype,
                    na_filter=False,
                    engine="c",
                    encoding="utf-8",
                )
                values = frame[features].to_numpy(np.float32)
        except Exception:  # any doubt: the exact path will say precisely what is wrong
            return None
        if values.shape != (count, len(features)) or not np.isfinite(values).all():
            return None
        ids = frame[id_index].tolist() if id_index is not None else None
        return Table(values, layout.columns, (len(features),), ids, layout.id_name)

    def _chunk(
        self,
        rows: list[list[str]],
        lines: list[int],
        ids: list[str] | None,
        columns: list[str] | None,
        features: list[int],
        id_name: str | None,
    ) -> Table | None:
        values, keep = to_floats(rows, lines, self.name, columns, features, self.opts.allow_nan)
        if keep is not None:
            self.stats.dropped += int((~keep).sum())
            if ids is not None:
                ids = [i for i, k in zip(ids, keep.tolist()) if k]
            if not len(values):
                return None
        return Table(values, columns, (len(features),), ids, id_name)

    def npy(self, source: Path | IO[bytes]) -> Iterator[Table]:
        yield from iter_npy(source, self.name, self.chunk_rows, self.opts, self.stats)


_BOM = "\ufeff".encode()
_FIELD_LIMIT = 2**31 - 1


@dataclass
class _Layout:
    """What the first record decided: header, width, feature and id columns."""

    header: bool
    width: int
    features: list[int]
    id_index: int | None
    columns: list[str] | None
    id_name: str | None
