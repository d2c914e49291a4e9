"""Cells of text to float32: the fast pandas parser, the exact fallback, and what a bad cell is."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from aecli.errors import DataError


def lazy_pandas() -> Any:
    """pandas, when installed: its C parser reads clean CSV chunks several times faster."""
    try:
        import pandas
    except ImportError:  # pragma: no cover - pandas is a dependency; the exact path still works
        return None
    return pandas


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


_MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "-nan"})
_NAN_HINT = " (--allow-nan drops such rows)"


def to_floats(
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
                named = columns[c] if columns else str(features[c])
                hint = delimiter_hint(cell) or (text_hint(named) if _is_text(cell) else "")
                raise DataError(
                    f"{problem}{label}{hint}", source=name, line=lines[r], column=features[c] + 1
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


_OTHER_DELIMITERS = (";", "\t", "|")
_DECIMAL_COMMA = re.compile(r"[-+]?\d+,\d+")


def delimiter_hint(text: str) -> str:
    """What a cell or a name that holds a whole row suggests: another delimiter, or decimal commas.

    The delimiter is never guessed (a one-column file is a file too); it is named.
    """
    if _DECIMAL_COMMA.fullmatch(text.strip()):
        return (
            "; a decimal comma? aecli reads 1.5, not 1,5: convert the file (for a ';'-separated "
            "one, tr ',' '.' < in.csv > out.csv) and give --delimiter ';'"
        )
    found = [d for d in _OTHER_DELIMITERS if d in text]
    if found and "," not in text:
        if found[0] == "\t":
            return "; looks tab-separated: try --delimiter '\\t' (or name the file .tsv)"
        return f"; looks '{found[0]}'-separated: try --delimiter '{found[0]}'"
    return ""


def text_hint(column: str) -> str:
    """A word where a number should be: most often a column of ids or labels among the features."""
    return (
        f"; a column of text, such as ids or labels? carry it with --id-column {column}, "
        f"or leave it out with --exclude {column}"
    )


def _is_text(cell: str) -> bool:
    """A word, not a malformed number or a gap: what an id or a name column holds.

    A cell Python reads as a float is a number, whatever letters it holds: ``1e300``
    (too large for float32), ``inf``, ``nan``.
    """
    try:
        float(cell)
    except ValueError:
        return any(ch.isalpha() for ch in cell) and not _missing(cell)
    return False


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
    with np.errstate(over="ignore"):
        # F25: what matters is the float32 it becomes; float32's own max (as aecli
        # writes it) rounds to itself, a larger value to inf.
        overflows = not np.isfinite(np.float32(number))
    if overflows:
        return None if allow_nan else f"{cell!r} overflows float32{_NAN_HINT}"
    return None
