"""A text file's lines: read lazily with their numbers, decoded as UTF-8 or named as not,
and read failures as DataErrors naming the source."""

from __future__ import annotations

import csv
import gzip
import itertools
import zlib
from collections.abc import Iterator
from typing import IO, Any

from aecli.errors import DataError


class NumberedLines:
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


def decoded_lines(head: list[bytes], first: int, rest: NumberedLines, name: str) -> Iterator[str]:
    """Text lines for the csv module (line ends kept, as newline='' would).

    ``head`` are lines already read, the first of them line ``first``.
    """
    for number, line in enumerate(head, first):
        yield line_text(line, number, name)
    for line in rest:
        yield line_text(line, rest.number, name)


def line_text(line: bytes, number: int, name: str) -> str:
    """A line as UTF-8 text, or an error naming its line and column (F21)."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        if number == 1 and (kind := binary_format(line)) is not None:
            raise DataError(
                f"this is a {kind[0]} file, not text: name it {kind[1]}", source=name
            ) from None
        raise DataError(
            f"not UTF-8 text (byte 0x{line[exc.start]:02x} after "
            f"{line[: exc.start][-20:].decode('utf-8', 'replace')!r}; convert the file, "
            "e.g. iconv -f cp1252 -t utf-8)",
            source=name,
            line=number,
        ) from None


# Binary formats aecli reads, by their first bytes, for a file whose name says text.
_MAGIC = (
    (b"PAR1", ("Parquet", ".parquet")),
    (b"ARROW1", ("Arrow IPC", ".arrow")),
    (b"\x93NUMPY", (".npy", ".npy")),
    (b"\xff\xff\xff\xff", ("Arrow IPC stream", ".arrow")),
)


def binary_format(head: bytes) -> tuple[str, str] | None:
    """(what, suffix) of a binary table format that ``head`` starts, or None."""
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


class guard_read:
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
        if isinstance(exc, gzip.BadGzipFile | zlib.error):  # F14: damaged compressed data
            raise DataError(f"not valid gzip data ({exc})", source=self.name)
        if isinstance(exc, UnicodeDecodeError):
            raise DataError("not UTF-8 text", source=self.name)
        if isinstance(exc, csv.Error):
            raise DataError(f"malformed CSV ({exc})", source=self.name)
        if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
            raise DataError(exc.strerror or str(exc), source=self.name)
        return False
