"""Read and write tables: CSV/TSV (optionally gzipped) and NPY, files or stdin/stdout.

Reading yields float32 chunks so that encode and reconstruct can stream;
every failure is a DataError naming the file, line and column. Writing goes
to a temporary file beside the target that is moved into place only when all
rows are written, so a failure never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
import math
import operator
import os
import struct
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from aecli.errors import DataError, UsageError

STDIO = "-"
CHUNK_ROWS = 16384
_GZIP_MAGIC = b"\x1f\x8b"
_NPY_MAGIC = b"\x93NUMPY"
_DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": ","}


@dataclass
class Table:
    """Rows of float32 features, with names when the source had a header.

    ``row_shape`` is the shape of one row before flattening (``(8, 8)`` for an
    N x 8 x 8 ``.npy``; ``(d,)`` for a table), so outputs can take it again.
    """

    values: np.ndarray
    columns: list[str] | None
    row_shape: tuple[int, ...]
    ids: list[str] | None = None
    id_name: str | None = None

    @property
    def n_features(self) -> int:
        return int(self.values.shape[1])


@dataclass(frozen=True)
class ReadOptions:
    """How to read a table: header, delimiter, which columns, what to do with gaps.

    ``columns`` names the feature columns (names, or 0-based indices as text);
    ``model_columns`` are a trained model's column names, picked by name from a
    file with a header when ``columns`` is not given; ``id_column`` is carried
    through as text; ``allow_nan`` drops rows with NaN, inf or missing cells
    instead of failing.
    """

    header: bool | None = None
    delimiter: str | None = None
    columns: tuple[str, ...] | None = None
    id_column: str | None = None
    allow_nan: bool = False
    model_columns: tuple[str, ...] | None = None


@dataclass
class ReadStats:
    """What a reader did besides yielding rows: rows dropped under ``allow_nan``."""

    dropped: int = 0


def describe(source: str) -> str:
    """The name a message uses for a source."""
    return "<stdin>" if source == STDIO else source


def read_table(source: str, *, stats: ReadStats | None = None, **options: Any) -> Table:
    """Read a whole table into memory (training needs every row at once)."""
    chunks = list(iter_table(source, stats=stats, **options))
    first = chunks[0]
    values = chunks[0].values if len(chunks) == 1 else np.concatenate([c.values for c in chunks])
    ids = None if first.ids is None else [i for c in chunks for i in c.ids or ()]
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
        gz = bool(suffixes) and suffixes[-1] == ".gz"
        ext = suffixes[-2] if gz and len(suffixes) == 2 else (suffixes[-1] if suffixes else "")
        delimiter = self.opts.delimiter
        if delimiter is None:
            if ext not in _DELIMITERS:
                raise DataError(
                    "unknown data format; use .csv, .tsv (optionally .gz) or .npy, "
                    "or name the delimiter with --delimiter",
                    source=name,
                )
            delimiter = _DELIMITERS[ext]
        with _guard_read(name):
            raw: IO[bytes] = gzip.open(path, "rb") if gz else open(path, "rb")  # noqa: SIM115
            with raw:
                yield from self.csv(raw, delimiter)

    def stream(self, stream: IO[bytes]) -> Iterator[Table]:
        """Stdin: gzip and NPY are recognised by their magic bytes, anything else is CSV."""
        with _guard_read(self.name):
            buffered = stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore[arg-type]
            head = buffered.peek(8)[:8]  # type: ignore[union-attr]
            if head.startswith(_GZIP_MAGIC):
                inner = gzip.GzipFile(fileobj=buffered, mode="rb")
                yield from self.stream(inner)
                return
            if head.startswith(_NPY_MAGIC):
                yield from self.npy(io.BytesIO(buffered.read()))
                return
            yield from self.csv(buffered, self.opts.delimiter or ",")

    def csv(self, raw: IO[bytes], delimiter: str) -> Iterator[Table]:
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
        lines = _Lines(raw)
        head = lines.next_nonblank()
        if head is None:
            raise DataError("empty file: no rows", source=name)
        first_no, first = head
        first = first.removeprefix(_BOM)
        if b'"' in first or _pandas() is None or len(delimiter) != 1:
            reader = csv.reader(_decoded([first], lines), delimiter=delimiter, strict=True)
            yield from self._exact(reader, first_no - 1, delimiter)
            return
        cells = first.decode("utf-8").rstrip("\r\n").split(delimiter)
        layout = self._layout(cells)
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
            if any(b'"' in line for line in batch):
                reader = csv.reader(_decoded(batch, lines), delimiter=delimiter, strict=True)
                for table in self._records(reader, numbers[0] - 1, layout):
                    emitted = True
                    yield table
                break
            table = self._fast(batch, layout, delimiter)
            if table is None:
                kept = [(n, line) for n, line in zip(numbers, batch) if line.strip()]
                rows = [line.decode("utf-8").rstrip("\r\n").split(delimiter) for _, line in kept]
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
            header = not all(_is_number(cell) for cell in first)
        names = [cell.strip() for cell in first] if header else None
        width = len(first)
        features, id_index = _select_columns(self.opts, names, width, self.name)
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
        for row in reader:
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
        pick = _picker(layout.features, width)
        ids = [row[layout.id_index] for row in kept_rows] if layout.id_index is not None else None
        values = [pick(row) for row in kept_rows] if pick else kept_rows
        return self._chunk(
            values, kept_numbers, ids, layout.columns, layout.features, layout.id_name
        )

    def _fast(self, batch: list[bytes], layout: _Layout, delimiter: str) -> Table | None:
        """pandas' C parser for a clean chunk; None sends the chunk to the exact path.

        Clean means: no blank line and every line has the header's field count,
        checked with numpy over the chunk's bytes rather than line by line.
        """
        pandas = _pandas()
        blob = b"".join(batch)
        if not blob.endswith(b"\n"):
            blob += b"\n"
        data = np.frombuffer(blob, dtype=np.uint8)
        ends = np.flatnonzero(data == ord("\n"))
        starts = np.concatenate(([0], ends[:-1] + 1))
        length = ends - starts
        blank = (length == 0) | ((length == 1) & (data[starts] == ord("\r")))
        if len(ends) != len(batch) or blank.any():
            return None  # a blank line: the exact path skips it
        fields = np.add.reduceat((data == ord(delimiter)).astype(np.int32), starts)
        if (fields != layout.width - 1).any():
            return None
        lines = batch
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
        if values.shape != (len(lines), len(features)) or not np.isfinite(values).all():
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
        values, keep = _to_floats(rows, lines, self.name, columns, features, self.opts.allow_nan)
        if keep is not None:
            self.stats.dropped += int((~keep).sum())
            if ids is not None:
                ids = [i for i, k in zip(ids, keep.tolist()) if k]
            if not len(values):
                return None
        return Table(values, columns, (len(features),), ids, id_name)

    def npy(self, source: Path | IO[bytes]) -> Iterator[Table]:
        yield from _iter_npy(source, self.name, self.chunk_rows, self.opts, self.stats)


_BOM = "\ufeff".encode()


@dataclass
class _Layout:
    """What the first record decided: header, width, feature and id columns."""

    header: bool
    width: int
    features: list[int]
    id_index: int | None
    columns: list[str] | None
    id_name: str | None


class _Lines:
    """Binary lines with their 1-based numbers, read lazily from a stream."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.number = 0

    def __iter__(self) -> Iterator[bytes]:
        for line in self.raw:
            self.number += 1
            yield line

    def next_nonblank(self) -> tuple[int, bytes] | None:
        for line in self:
            if line.strip():
                return self.number, line
        return None

    def take(self, count: int) -> list[bytes]:
        """Up to ``count`` lines; the first has number ``self.number + 1`` before the call."""
        batch = list(itertools.islice(self.raw, count))
        self.number += len(batch)
        return batch


def _decoded(head: list[bytes], rest: Iterable[bytes]) -> Iterator[str]:
    """Text lines for the csv module (line ends kept, as newline='' would)."""
    for line in head:
        yield line.decode("utf-8")
    for line in rest:
        yield line.decode("utf-8")


def _pandas() -> Any:
    """pandas, when installed: its C parser reads clean CSV chunks several times faster."""
    try:
        import pandas
    except ImportError:  # pragma: no cover - pandas is a dependency; the exact path still works
        return None
    return pandas


def _picker(features: list[int], width: int) -> Any:
    """A fast row -> selected cells function, or None when every column is a feature."""
    if features == list(range(width)):
        return None
    if len(features) == 1:
        index = features[0]
        return lambda row: [row[index]]
    getter = operator.itemgetter(*features)
    return lambda row: list(getter(row))


def _select_columns(
    opts: ReadOptions, names: list[str] | None, width: int, source: str
) -> tuple[list[int], int | None]:
    """Feature column indices and the id column index, from the options and the header."""
    id_index = None
    if opts.id_column is not None:
        id_index = _resolve_column(opts.id_column, names, width, source, "--id-column")
    if opts.columns:
        features = [_resolve_column(c, names, width, source, "--columns") for c in opts.columns]
        seen = set()
        for col, index in zip(opts.columns, features):
            if index in seen:
                raise DataError(f"column {col!r} is named twice in --columns", source=source)
            seen.add(index)
    elif opts.model_columns and names is not None and set(opts.model_columns) <= set(names):
        # A trained model picks its own columns by name, in its order; when the
        # header lacks some, all columns are passed on and the model's width
        # and name checks say what does not match.
        features = [names.index(c) for c in opts.model_columns]
    else:
        features = [i for i in range(width) if i != id_index]
    if id_index is not None and id_index in features:
        raise DataError(
            f"--id-column {opts.id_column!r} is also one of the feature columns", source=source
        )
    if not features:
        raise DataError("no feature columns left besides the --id-column", source=source)
    return features, id_index


def _resolve_column(item: str, names: list[str] | None, width: int, source: str, what: str) -> int:
    """A column by header name, else by 0-based index."""
    item = item.strip()
    if names is not None and item in names:
        return names.index(item)
    if item.isdigit() and int(item) < width:
        return int(item)
    if names is not None:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        have = f"its columns are {shown}"
    else:
        have = f"it has {width} columns (0..{width - 1}) and no header"
    if item.isdigit():
        raise DataError(f"column index {item} is out of range ({what}); {have}", source=source)
    raise DataError(f"no column named {item!r} ({what}); {have}", source=source)


class _guard_read:
    """Turn low-level read failures into DataErrors that name the source."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, DataError | GeneratorExit):
            return False
        if isinstance(exc, EOFError):
            raise DataError("compressed data ends early (truncated .gz?)", source=self.name)
        if isinstance(exc, gzip.BadGzipFile):
            raise DataError(f"not valid gzip data ({exc})", source=self.name)
        if isinstance(exc, UnicodeDecodeError):
            raise DataError("not UTF-8 text", source=self.name)
        if isinstance(exc, csv.Error):
            raise DataError(f"malformed CSV ({exc})", source=self.name)
        if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
            raise DataError(exc.strerror or str(exc), source=self.name)
        return False


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


_MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "-nan"})
_NAN_HINT = " (--allow-nan drops such rows)"


def _to_floats(
    rows: list[list[str]],
    lines: list[int],
    name: str,
    columns: list[str] | None,
    features: list[int],
    allow_nan: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert string cells to float32; the keep-mask is None when no row was dropped.

    The fast path is one numpy call per chunk; only a chunk that fails it is
    looked at cell by cell, to name the first bad cell or (with ``allow_nan``)
    to turn missing cells into NaN rows that are then dropped.
    """
    values = _parse(rows)
    if values is None and allow_nan:
        values = _parse([[("nan" if _missing(c) else c) for c in row] for row in rows])
    if values is not None:
        finite = np.isfinite(values).all(axis=1)
        if finite.all():
            return values, None
        if allow_nan:
            return values[finite], finite
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            problem = _cell_problem(cell, allow_nan)
            if problem:
                label = f" ({columns[c]!r})" if columns else ""
                raise DataError(
                    f"{problem}{label}", source=name, line=lines[r], column=features[c] + 1
                )
    raise AssertionError("unreachable: a bad cell was expected")  # pragma: no cover


def _parse(rows: list[list[str]]) -> np.ndarray | None:
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return np.array(rows, dtype=np.float32)
    except ValueError:
        return None


def _missing(cell: str) -> bool:
    return cell.strip().lower() in _MISSING


def _cell_problem(cell: str, allow_nan: bool = False) -> str | None:
    """Why a cell cannot be used, or None; with ``allow_nan`` missing values are fine."""
    if allow_nan and _missing(cell):
        return None
    if not cell.strip():
        return "empty cell" + _NAN_HINT
    try:
        number = float(cell)
    except ValueError:
        hint = _NAN_HINT if _missing(cell) else ""
        return f"{cell!r} is not a number{hint}"
    if not math.isfinite(number):
        return None if allow_nan else f"{cell!r} is not a finite number{_NAN_HINT}"
    if abs(number) > float(np.finfo(np.float32).max):
        return None if allow_nan else f"{cell!r} overflows float32{_NAN_HINT}"
    return None


def _iter_npy(
    source: Path | IO[bytes], name: str, chunk_rows: int, opts: ReadOptions, stats: ReadStats
) -> Iterator[Table]:
    """Rows of a .npy, memory-mapped from a path so that only one chunk is in memory."""
    flat, row_shape, features = _open_npy(source, name, opts)
    emitted = False
    for start in range(0, flat.shape[0], chunk_rows):
        chunk = _npy_chunk(flat, start, start + chunk_rows, features, opts.allow_nan, stats, name)
        if not len(chunk):
            continue
        emitted = True
        yield Table(chunk, None, row_shape)
    if not emitted:
        raise DataError(
            f"no rows left after dropping {stats.dropped} with missing values", source=name
        )


def _open_npy(
    source: Path | IO[bytes], name: str, opts: ReadOptions
) -> tuple[np.ndarray, tuple[int, ...], list[int] | None]:
    """A validated 2-D (rows x values) view of a .npy, its row shape and selected columns."""
    try:
        if isinstance(source, Path):
            array = np.load(source, mmap_mode="r", allow_pickle=False)
        else:
            array = np.load(source, allow_pickle=False)
    except ValueError as exc:
        text = str(exc)
        pickled = "pickle" in text or "Python objects" in text
        reason = "holds Python objects (refused: never unpickled)" if pickled else text
        raise DataError(f"not a usable .npy file: {reason}", source=name) from None
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read .npy file: {exc}", source=name) from None
    except Exception as exc:  # numpy parses damaged headers with tokenize, ast, ...
        raise DataError(f"not a usable .npy file: damaged header ({exc})", source=name) from None
    if not isinstance(array, np.ndarray):
        raise DataError("not a .npy array (an .npz archive?)", source=name)
    if array.dtype.kind not in "fiu":
        raise DataError(f"dtype {array.dtype} is not a real number type", source=name)
    if array.ndim == 0 or array.shape[0] == 0:
        raise DataError(f"no rows (shape {array.shape})", source=name)
    if opts.id_column is not None:
        raise UsageError(
            "a .npy file has no text column to carry; --id-column needs CSV input",
            flag="--id-column",
        )
    row_shape = tuple(int(s) for s in array.shape[1:])
    flat: Any = array.reshape(array.shape[0], -1)
    width = flat.shape[1]
    if width == 0:
        raise DataError(f"rows have no values (shape {array.shape})", source=name)
    if isinstance(array, np.memmap) and array.flags.c_contiguous:
        flat = _FileRows(source, int(array.offset), array.dtype, flat.shape)  # type: ignore[arg-type]
        del array
    features = None
    if opts.columns:
        features = [_resolve_column(c, None, width, name, "--columns") for c in opts.columns]
        row_shape = (len(features),)
    return flat, row_shape, features


def _float32_rows(block: np.ndarray, features: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """The selected columns of some rows, as read and as float32 (overflow becomes inf)."""
    if features is not None:
        block = block[:, features]
    with np.errstate(over="ignore"):
        return block, np.asarray(block, dtype=np.float32)


def _npy_chunk(
    flat: np.ndarray,
    start: int,
    stop: int,
    features: list[int] | None,
    allow_nan: bool,
    stats: ReadStats,
    name: str,
) -> np.ndarray:
    """Rows start..stop as float32; non-finite values fail, or drop their rows."""
    block, chunk = _float32_rows(flat[start:stop], features)
    finite = np.isfinite(chunk).all(axis=1)
    if finite.all():
        return chunk
    if allow_nan:
        stats.dropped += int((~finite).sum())
        return chunk[finite]
    row, col = (int(i) for i in np.argwhere(~np.isfinite(chunk))[0])
    original = block[row, col]
    what = "overflows float32" if np.isfinite(original) else "is not a finite number"
    raise DataError(
        f"value {original} at row {start + row}, column {col} {what}{_NAN_HINT}", source=name
    )


class _FileRows:
    """Rows of a C-ordered .npy, read on demand with positioned reads.

    A memory map would do the same with less code, but every page it touches
    stays counted in the process's resident memory, so a pass over a file 10x
    larger grows RSS by the file's size. Here only the rows asked for are held.
    """

    WINDOW = 65536  # rows read at a time when gathering scattered rows

    def __init__(self, path: Path, offset: int, dtype: np.dtype, shape: tuple[int, int]) -> None:
        self.file = open(path, "rb")  # noqa: SIM115 - lives as long as the reader
        self.offset = offset
        self.dtype = dtype
        self.shape = shape

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, width = self.shape
        if isinstance(key, slice):
            start, stop, step = key.indices(rows)
            if step != 1:
                raise ValueError("only contiguous row ranges")
            count = max(0, stop - start) * width
            self.file.seek(self.offset + start * width * self.dtype.itemsize)
            return np.fromfile(self.file, dtype=self.dtype, count=count).reshape(-1, width)
        indices = np.asarray(key)  # sorted row numbers: read window by window
        parts = []
        for start in range(0, rows, self.WINDOW):
            lo, hi = np.searchsorted(indices, [start, start + self.WINDOW])
            if hi > lo:
                parts.append(self[start : start + self.WINDOW][indices[lo:hi] - start])
        return np.concatenate(parts) if parts else np.empty((0, width), self.dtype)


def should_stream(source: str, chunk_rows: int) -> bool:
    """Train from a .npy in chunks: when asked (``chunk_rows``), or when it is too big to load.

    Too big: its float32 rows would take more than a quarter of the memory
    available now (MemAvailable on Linux).
    """
    if source == STDIO or not source.lower().endswith(".npy") or not os.path.isfile(source):
        return False
    if chunk_rows > 0:
        return True
    available = _available_memory()
    return available is not None and os.path.getsize(source) * 2 > available // 4


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class NpyRows:
    """A .npy file used in row chunks read from disk, never loaded whole.

    For training on arrays larger than memory: the trainer asks for chunks
    in shuffled order each epoch, and for a few scattered rows (validation).
    """

    def __init__(self, path: str, **options: Any) -> None:
        self.name = describe(path)
        self.opts = ReadOptions(**options)
        self.stats = ReadStats()
        self.flat, self.row_shape, self.features = _open_npy(Path(path), self.name, self.opts)
        self.columns: list[str] | None = None

    @property
    def rows(self) -> int:
        return int(self.flat.shape[0])

    @property
    def n_features(self) -> int:
        return len(self.features) if self.features is not None else int(self.flat.shape[1])

    def chunk(
        self,
        start: int,
        stop: int,
        *,
        count_dropped: bool = False,
        exclude: np.ndarray | None = None,
    ) -> np.ndarray:
        """Rows start..stop as float32, without the (sorted) row numbers in ``exclude``."""
        stats = self.stats if count_dropped else ReadStats()
        if exclude is None or not len(exclude):
            return _npy_chunk(
                self.flat, start, stop, self.features, self.opts.allow_nan, stats, self.name
            )
        lo, hi = np.searchsorted(exclude, [start, stop])
        _, values = _float32_rows(self.flat[start:stop], self.features)
        keep = np.isfinite(values).all(axis=1)  # bad values were reported by the fitting pass
        keep[exclude[lo:hi] - start] = False
        return values[keep]

    def chunks(self, size: int, *, count_dropped: bool = False) -> Iterator[np.ndarray]:
        for start in range(0, self.rows, size):
            yield self.chunk(start, start + size, count_dropped=count_dropped)

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Scattered rows (sorted indices), finite ones only."""
        _, values = _float32_rows(self.flat[indices], self.features)
        return values[np.isfinite(values).all(axis=1)]


class AtomicFile:
    """A file that appears at ``dest`` only when ``commit`` is called, complete.

    On Linux the data goes to an anonymous ``O_TMPFILE`` inode in the target's
    directory, so a crash or ``kill -9`` leaves nothing behind at all; commit
    links it under a temporary name and renames that over ``dest`` (atomic
    on POSIX). Elsewhere a named temporary sibling is used and removed on
    failure. Until commit, a previous file at ``dest`` is never touched.
    """

    def __init__(self, dest: str, flag: str = "-o") -> None:
        target = Path(dest)
        if target.is_dir():
            raise UsageError(f"{dest!r} is a directory", flag=flag)
        parent = target.parent
        if not parent.is_dir():
            raise DataError("directory does not exist", source=str(parent))
        self.dest = dest
        self._named: str | None = None
        try:
            fd = os.open(parent, os.O_TMPFILE | os.O_WRONLY, 0o666)  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115
                dir=parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
            )
            self.file: IO[bytes] = tmp
            self._named = tmp.name
        else:
            self.file = os.fdopen(fd, "wb")

    def commit(self) -> None:
        """Flush to disk and move into place."""
        self.file.flush()
        os.fsync(self.file.fileno())
        parent = os.path.dirname(os.path.abspath(self.dest))
        if self._named is None:
            name = os.path.join(parent, f".{os.path.basename(self.dest)}.{os.getpid()}.tmp")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            # linkat(AT_SYMLINK_FOLLOW) through /proc gives the anonymous inode a name.
            proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.link(str(self.file.fileno()), name, src_dir_fd=proc, follow_symlinks=True)
            finally:
                os.close(proc)
            self.file.close()
        else:
            name = self._named
            self.file.close()
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(name, 0o666 & ~umask)
        try:
            os.replace(name, self.dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise
        with contextlib.suppress(OSError):
            dirfd = os.open(parent, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)

    def discard(self) -> None:
        """Forget the data; ``dest`` stays as it was."""
        self.file.close()
        if self._named is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._named)


class _NpyStream:
    """Write a float32 .npy row by row: the header's row count is fixed up at the end.

    The header is written with room for any row count (padded with spaces, as
    the format allows), so the final count can be written over it in place.
    """

    def __init__(self, sink: IO[bytes], row_shape: tuple[int, ...]) -> None:
        self.sink = sink
        self.row_shape = row_shape
        self.rows = 0
        self.size = len(self._header(10**19, 0))
        sink.write(self._header(0, self.size))

    def _header(self, rows: int, size: int) -> bytes:
        shape = (rows, *self.row_shape)
        text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}"
        # 10 bytes of preamble; the whole header is a multiple of 64 bytes and ends in \n.
        total = size or (10 + len(text) + 1 + 63) // 64 * 64
        text = text.ljust(total - 10 - 1) + "\n"
        return _NPY_MAGIC + b"\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")

    def write(self, values: np.ndarray) -> None:
        self.sink.write(np.ascontiguousarray(values, dtype="<f4").tobytes())
        self.rows += int(values.shape[0])

    def finish(self) -> None:
        self.sink.seek(0)
        self.sink.write(self._header(self.rows, self.size))
        self.sink.seek(0, os.SEEK_END)


class TableWriter:
    """Write rows to stdout (CSV) or to a file whose format follows its extension.

    Every format streams: CSV rows are formatted chunk by chunk, a .npy gets
    its final row count written into its header at the end. Files are written
    through an AtomicFile and appear only on ``commit``; ``abort`` (or leaving
    the ``with`` block by an exception) leaves any previous file untouched.
    An ``id_name`` adds a leading text column (CSV only).
    """

    def __init__(
        self,
        dest: str | None,
        columns: Sequence[str],
        row_shape: tuple[int, ...],
        *,
        protect: Sequence[str] = (),
        flag: str = "-o",
        id_name: str | None = None,
    ) -> None:
        self.dest = None if dest in (None, STDIO) else dest
        self.columns = list(columns)
        self.row_shape = row_shape
        self.id_name = id_name
        self._npy: _NpyStream | None = None
        self._file: AtomicFile | None = None
        self._gz: gzip.GzipFile | None = None
        self._text: IO[str]
        if self.dest is None:
            self._text = sys.stdout
            self._write_header(",")
            return
        refuse_overwrite(self.dest, protect, flag)
        kind, gz, delimiter = _output_format(self.dest, flag)
        if kind == "npy" and id_name is not None:
            raise UsageError(
                "a .npy output cannot hold the --id-column's text; write .csv or .tsv",
                flag="--id-column",
            )
        self._file = AtomicFile(self.dest, flag)
        if kind == "npy":
            self._npy = _NpyStream(self._file.file, row_shape)
            return
        sink: IO[bytes] = self._file.file
        if gz:
            self._gz = gzip.GzipFile(fileobj=sink, mode="wb", mtime=0)
            sink = self._gz  # type: ignore[assignment]
        self._text = io.TextIOWrapper(sink, encoding="utf-8", newline="")  # type: ignore[arg-type]
        self._write_header(delimiter)

    def _write_header(self, delimiter: str) -> None:
        self._delimiter = delimiter
        names = ([self.id_name] if self.id_name is not None else []) + self.columns
        self._text.write(delimiter.join(_quote(c, delimiter) for c in names) + "\n")

    def write(self, values: np.ndarray, ids: Sequence[str] | None = None) -> None:
        """Append rows (float32 2-D, one column per name), with their ids if any."""
        if self._npy is not None:
            self._npy.write(values)
            return
        self._text.write(format_rows(values, self._delimiter, ids))

    def commit(self) -> None:
        """Finish the output: flush stdout, or move the finished file into place."""
        if self._file is None:
            self._text.flush()
            return
        if self._npy is not None:
            self._npy.finish()
        else:
            self._text.flush()
            self._text.detach()
            if self._gz is not None:
                self._gz.close()
        self._file.commit()
        self._file = None

    def abort(self) -> None:
        """Drop the unfinished file; the destination is left as it was."""
        if self._file is not None:
            self._file.discard()
            self._file = None

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.commit()
        else:
            self.abort()


def format_rows(values: np.ndarray, delimiter: str = ",", ids: Sequence[str] | None = None) -> str:
    """CSV text for float32 rows; ``str`` of a float32 is its shortest round-trip form."""
    rows = np.asarray(values, dtype=np.float32)
    if ids is None:
        return "".join(delimiter.join(map(str, row)) + "\n" for row in rows)
    return "".join(
        _quote(i, delimiter) + delimiter + delimiter.join(map(str, row)) + "\n"
        for i, row in zip(ids, rows)
    )


def _quote(name: str, delimiter: str) -> str:
    if any(ch in name for ch in (delimiter, '"', "\n", "\r")) or name != name.strip():
        return '"' + name.replace('"', '""') + '"'
    return name


def _output_format(dest: str, flag: str) -> tuple[str, bool, str]:
    suffixes = [s.lower() for s in Path(dest).suffixes[-2:]]
    if suffixes and suffixes[-1] == ".npy":
        return "npy", False, ""
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    ext = suffixes[-2] if gz and len(suffixes) == 2 else (suffixes[-1] if suffixes else "")
    if ext not in _DELIMITERS:
        raise UsageError(
            f"cannot tell the output format of {dest!r}; use .csv, .tsv, .csv.gz, .tsv.gz or .npy",
            flag=flag,
        )
    return "csv", gz, _DELIMITERS[ext]


def refuse_overwrite(dest: str, protect: Sequence[str], flag: str) -> None:
    """A usage error when ``dest`` is one of the command's inputs (same file, any path)."""
    for other in protect:
        if other in (None, STDIO):
            continue
        try:
            same = os.path.samefile(dest, other)
        except OSError:
            same = False
        if same:
            raise UsageError(
                f"{dest!r} is an input of this command; refusing to overwrite it", flag=flag
            )


def write_bytes_atomic(
    dest: str, data: bytes, *, protect: Sequence[str] = (), flag: str = "-o"
) -> None:
    """Write a whole file (a model) atomically: temp file, fsync, rename."""
    refuse_overwrite(dest, protect, flag)
    target = AtomicFile(dest, flag)
    try:
        target.file.write(data)
        target.commit()
    except BaseException:
        target.discard()
        raise
