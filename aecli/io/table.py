"""The table value and reading options: what every reader and writer shares."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STDIO = "-"
CHUNK_ROWS = 16384
# Rows of a chunk are also capped by values, so that a wide table is read in as
# little memory as a narrow one: parsing CSV costs about 100 bytes a value at its
# peak, so 2M values stay near 200 MB however wide the rows (F09).
CHUNK_VALUES = 2**21


def chunk_rows_for(width: int, rows: int) -> int:
    """At most ``rows`` rows, and at most CHUNK_VALUES values, a chunk (at least one row)."""
    return max(1, min(rows, CHUNK_VALUES // max(width, 1)))


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
    ids: Any = None  # the --id-column's values: text, or Arrow's array (aecli/io/ids.py)
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
    exclude: tuple[str, ...] | None = None  # columns left out (names, indices, ranges, globs)
    id_column: str | None = None
    allow_nan: bool = False
    model_columns: tuple[str, ...] | None = None
    model_id_column: str | None = None  # the id column a model was trained with, if the file has it


@dataclass
class ReadStats:
    """What a reader did besides yielding rows: rows dropped under ``allow_nan``."""

    dropped: int = 0
    dropped_rows: list[int] = field(default_factory=list)  # .npy row numbers, when counted


def describe(source: str) -> str:
    """The name a message uses for a source."""
    return "<stdin>" if source == STDIO else source


def pick_rows(chunks: Iterable[Table], wanted: set[int]) -> tuple[dict[int, np.ndarray], int]:
    """Rows by 0-based number from a stream of chunks, reading no further than needed.

    Returns the rows found and how many rows were read (all of them when one
    is missing, so a message can say how many there are).
    """
    found: dict[int, np.ndarray] = {}
    seen = 0
    for chunk in chunks:
        for index in wanted:
            if seen <= index < seen + len(chunk.values):
                found[index] = chunk.values[index - seen]
        seen += len(chunk.values)
        if len(found) == len(wanted):
            break
    return found, seen
