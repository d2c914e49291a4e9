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
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
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

    @property
    def n_features(self) -> int:
        return int(self.values.shape[1])


def describe(source: str) -> str:
    """The name a message uses for a source."""
    return "<stdin>" if source == STDIO else source


def read_table(source: str, *, header: bool | None = None, delimiter: str | None = None) -> Table:
    """Read a whole table into memory (training needs every row at once)."""
    chunks = list(iter_table(source, header=header, delimiter=delimiter))
    first = chunks[0]
    values = chunks[0].values if len(chunks) == 1 else np.concatenate([c.values for c in chunks])
    return Table(values, first.columns, first.row_shape)


def iter_table(
    source: str,
    *,
    header: bool | None = None,
    delimiter: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[Table]:
    """Yield the table in chunks of at most ``chunk_rows`` rows, in order.

    The first chunk is read before anything is yielded, so a source with no
    data rows fails before a caller opens its output.
    """
    name = describe(source)
    if source == STDIO:
        stream: IO[bytes] = sys.stdin.buffer
        yield from _iter_stream(stream, name, header, delimiter, chunk_rows)
        return
    path = Path(source)
    if not path.exists():
        raise DataError("no such file", source=name)
    if path.is_dir():
        raise DataError("is a directory, not a data file", source=name)
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] == ".npy":
        yield from _iter_npy(path, name, chunk_rows)
        return
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    ext = suffixes[-2] if gz and len(suffixes) == 2 else (suffixes[-1] if suffixes else "")
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
            yield from _iter_csv(raw, name, header, delimiter, chunk_rows)


def _iter_stream(
    stream: IO[bytes],
    name: str,
    header: bool | None,
    delimiter: str | None,
    chunk_rows: int,
) -> Iterator[Table]:
    """Stdin: gzip and NPY are recognised by their magic bytes, anything else is CSV."""
    with _guard_read(name):
        buffered = stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore[arg-type]
        head = buffered.peek(8)[:8]  # type: ignore[union-attr]
        if head.startswith(_GZIP_MAGIC):
            inner = gzip.GzipFile(fileobj=buffered, mode="rb")
            yield from _iter_stream(inner, name, header, delimiter, chunk_rows)
            return
        if head.startswith(_NPY_MAGIC):
            data = io.BytesIO(buffered.read())
            yield from _iter_npy(data, name, chunk_rows)
            return
        yield from _iter_csv(buffered, name, header, delimiter or ",", chunk_rows)


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


def _iter_csv(
    raw: IO[bytes],
    name: str,
    header: bool | None,
    delimiter: str,
    chunk_rows: int,
) -> Iterator[Table]:
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")  # type: ignore[arg-type]
    reader = csv.reader(text, delimiter=delimiter, strict=True)
    first = next((row for row in reader if row), None)
    if first is None:
        raise DataError("empty file: no rows", source=name)
    if header is None:
        header = not all(_is_number(cell) for cell in first)
    columns = [cell.strip() for cell in first] if header else None
    width = len(first)
    rows: list[list[str]] = [] if header else [first]
    lines: list[int] = [] if header else [reader.line_num]
    emitted = False
    for row in reader:
        if not row:
            continue
        if len(row) != width:
            raise DataError(
                f"expected {width} fields, found {len(row)}", source=name, line=reader.line_num
            )
        rows.append(row)
        lines.append(reader.line_num)
        if len(rows) >= chunk_rows:
            yield Table(_to_floats(rows, lines, name, columns), columns, (width,))
            emitted = True
            rows, lines = [], []
    if rows:
        yield Table(_to_floats(rows, lines, name, columns), columns, (width,))
    elif not emitted:
        raise DataError("no data rows, only a header", source=name)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _to_floats(
    rows: list[list[str]], lines: list[int], name: str, columns: list[str] | None
) -> np.ndarray:
    """Convert string cells to float32, locating the first bad cell on failure."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            values = np.array(rows, dtype=np.float32)
    except ValueError:
        values = None
    if values is not None and np.isfinite(values).all():
        return values
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            problem = _cell_problem(cell)
            if problem:
                label = f" ({columns[c]!r})" if columns else ""
                raise DataError(f"{problem}{label}", source=name, line=lines[r], column=c + 1)
    raise AssertionError("unreachable: a bad cell was expected")  # pragma: no cover


def _cell_problem(cell: str) -> str | None:
    if not cell.strip():
        return "empty cell"
    try:
        number = float(cell)
    except ValueError:
        return f"{cell!r} is not a number"
    if not math.isfinite(number):
        return f"{cell!r} is not a finite number"
    if abs(number) > float(np.finfo(np.float32).max):
        return f"{cell!r} overflows float32"
    return None


def _iter_npy(source: Path | IO[bytes], name: str, chunk_rows: int) -> Iterator[Table]:
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
    if not isinstance(array, np.ndarray):
        raise DataError("not a .npy array (an .npz archive?)", source=name)
    if array.dtype.kind not in "fiu":
        raise DataError(f"dtype {array.dtype} is not a real number type", source=name)
    if array.ndim == 0 or array.shape[0] == 0:
        raise DataError(f"no rows (shape {array.shape})", source=name)
    row_shape = tuple(int(s) for s in array.shape[1:])
    flat = array.reshape(array.shape[0], -1)
    if flat.shape[1] == 0:
        raise DataError(f"rows have no values (shape {array.shape})", source=name)
    for start in range(0, flat.shape[0], chunk_rows):
        with np.errstate(over="ignore"):
            chunk = np.asarray(flat[start : start + chunk_rows], dtype=np.float32)
        bad = ~np.isfinite(chunk)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            original = flat[start + row, col]
            what = "overflows float32" if np.isfinite(original) else "is not a finite number"
            raise DataError(
                f"value {original} at row {start + row}, column {col} {what}", source=name
            )
        yield Table(chunk, None, row_shape)


class TableWriter:
    """Write rows to stdout (CSV) or to a file whose format follows its extension.

    Files are written to a temporary sibling and moved into place by
    ``commit``; ``abort`` (or leaving the ``with`` block by an exception)
    removes the temporary and leaves any previous file untouched.
    """

    def __init__(
        self,
        dest: str | None,
        columns: Sequence[str],
        row_shape: tuple[int, ...],
        *,
        protect: Sequence[str] = (),
        flag: str = "-o",
    ) -> None:
        self.dest = None if dest in (None, STDIO) else dest
        self.columns = list(columns)
        self.row_shape = row_shape
        self._npy_chunks: list[np.ndarray] | None = None
        self._tmp: IO[bytes] | None = None
        self._text: IO[str]
        if self.dest is None:
            self._text = sys.stdout
            self._write_header(",")
            return
        _refuse_overwrite(self.dest, protect, flag)
        kind, gz, delimiter = _output_format(self.dest, flag)
        self._delimiter = delimiter
        self._tmp = _open_temp(self.dest)
        if kind == "npy":
            self._npy_chunks = []
            return
        sink: IO[bytes] = self._tmp
        if gz:
            sink = gzip.GzipFile(fileobj=self._tmp, mode="wb", mtime=0)
        self._gz = sink if gz else None
        self._text = io.TextIOWrapper(sink, encoding="utf-8", newline="")  # type: ignore[arg-type]
        self._write_header(delimiter)

    def _write_header(self, delimiter: str) -> None:
        self._delimiter = delimiter
        self._text.write(delimiter.join(_quote(c, delimiter) for c in self.columns) + "\n")

    def write(self, values: np.ndarray) -> None:
        """Append rows (float32 2-D, one column per name)."""
        if self._npy_chunks is not None:
            self._npy_chunks.append(np.asarray(values, dtype=np.float32))
            return
        self._text.write(format_rows(values, self._delimiter))

    def commit(self) -> None:
        """Finish the output: flush stdout, or move the finished file into place."""
        if self._tmp is None:
            self._text.flush()
            return
        if self._npy_chunks is not None:
            rows = np.concatenate(self._npy_chunks) if self._npy_chunks else np.zeros((0, 1))
            np.save(self._tmp, rows.reshape((rows.shape[0], *self.row_shape)))
        else:
            self._text.flush()
            self._text.detach()
            if self._gz is not None:
                self._gz.close()
        _commit_temp(self._tmp, self.dest)  # type: ignore[arg-type]
        self._tmp = None

    def abort(self) -> None:
        """Drop the temporary file; the destination is left as it was."""
        if self._tmp is not None:
            _discard_temp(self._tmp)
            self._tmp = None

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.commit()
        else:
            self.abort()


def format_rows(values: np.ndarray, delimiter: str = ",") -> str:
    """CSV text for float32 rows; ``str`` of a float32 is its shortest round-trip form."""
    rows = np.asarray(values, dtype=np.float32)
    return "".join(delimiter.join(map(str, row)) + "\n" for row in rows)


def _quote(name: str, delimiter: str) -> str:
    if any(ch in name for ch in (delimiter, '"', "\n", "\r")):
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


def _refuse_overwrite(dest: str, protect: Sequence[str], flag: str) -> None:
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


def _open_temp(dest: str) -> IO[bytes]:
    target = Path(dest)
    if target.is_dir():
        raise UsageError(f"{dest!r} is a directory", flag="-o")
    parent = target.parent
    if not parent.is_dir():
        raise DataError("directory does not exist", source=str(parent))
    return tempfile.NamedTemporaryFile(
        dir=parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
    )


def _commit_temp(tmp: IO[bytes], dest: str) -> None:
    tmp.flush()
    os.fsync(tmp.fileno())
    tmp.close()
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp.name, 0o666 & ~umask)
    os.replace(tmp.name, dest)


def _discard_temp(tmp: IO[bytes]) -> None:
    tmp.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp.name)


def write_bytes_atomic(
    dest: str, data: bytes, *, protect: Sequence[str] = (), flag: str = "-o"
) -> None:
    """Write a whole file (a model) atomically: temp file, fsync, rename."""
    _refuse_overwrite(dest, protect, flag)
    tmp = _open_temp(dest)
    try:
        tmp.write(data)
        _commit_temp(tmp, dest)
    except BaseException:
        _discard_temp(tmp)
        raise
