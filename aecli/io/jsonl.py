"""JSON Lines in and out: one object per row, features by name (issue 37).

The log and event streams a shell pipeline carries are mostly JSON Lines. Reading follows
CSV's rules: the first object's keys are the columns (``--columns``, ``--exclude`` and a
model's own columns pick among them, in any key order; other keys are ignored, or carried
with ``--id-column``); a missing key, a text where a number belongs, a null or a value
beyond float32 is an error naming the line and the key, unless ``--allow-nan`` drops the
row (missing values only). Each line is parsed by Python's own ``json`` module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from aecli.errors import DataError
from aecli.io.cells import text_hint
from aecli.io.columns import select_columns
from aecli.io.ids import as_text
from aecli.io.lines import NumberedLines, line_text
from aecli.io.live import LiveLines
from aecli.io.table import ReadOptions, ReadStats, Table, chunk_rows_for

SUFFIXES = (".jsonl", ".ndjson")
_MISSING = object()


def iter_jsonl(
    lines: NumberedLines, name: str, opts: ReadOptions, stats: ReadStats, rows: int
) -> Iterator[Table]:
    """The objects of ``lines`` as float32 chunks of at most ``rows`` rows."""
    head = lines.next_nonblank()
    if head is None:
        raise DataError("empty file: no rows", source=name)
    number, line = head
    first = _object(line, number, name)
    names = [str(key) for key in first]
    features, id_index = select_columns(opts, names, len(names), name, False)
    columns = [names[i] for i in features]
    id_name = names[id_index] if id_index is not None else None
    step = chunk_rows_for(len(features), rows)
    pending: list[tuple[int, dict[str, Any]]] = [(number, first)]
    emitted = False
    if isinstance(lines, LiveLines):  # on a pipe the next row may be a while coming
        table = _chunk(pending, columns, id_name, name, opts, stats)
        emitted, pending = table is not None, []
        if table is not None:
            yield table
    while True:
        start = lines.number
        batch = lines.take(step - len(pending))
        for offset, text in enumerate(batch, start + 1):
            if text.strip():
                pending.append((offset, _object(text, offset, name)))
        if not pending:
            break
        table = _chunk(pending, columns, id_name, name, opts, stats)
        pending = []
        if table is not None:
            emitted = True
            yield table
        if not batch:
            break
    if not emitted:
        raise DataError("no rows left without missing values", source=name)


def _object(line: bytes, number: int, name: str) -> dict[str, Any]:
    try:
        value = json.loads(line_text(line, number, name))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"not JSON ({exc.msg}, column {exc.colno})", source=name, line=number
        ) from None
    if not isinstance(value, dict):
        raise DataError(f"a JSON {type(value).__name__}, not an object", source=name, line=number)
    return value


def _chunk(
    objects: list[tuple[int, dict[str, Any]]],
    columns: list[str],
    id_name: str | None,
    name: str,
    opts: ReadOptions,
    stats: ReadStats,
) -> Table | None:
    fast = _fast(objects, columns)
    if fast is not None:
        ids = None if id_name is None else [_id(obj.get(id_name)) for _, obj in objects]
        return Table(fast, columns, (len(columns),), ids, id_name)
    values = np.empty((len(objects), len(columns)), dtype=np.float32)
    keep = np.ones(len(objects), dtype=bool)
    for r, (number, obj) in enumerate(objects):
        for c, key in enumerate(columns):
            value = _number(obj.get(key, _MISSING), key, number, name, opts.allow_nan)
            if value is None:
                keep[r] = False
                break
            values[r, c] = value
    ids = None
    if id_name is not None:
        ids = [_id(obj.get(id_name)) for _, obj in objects]
    if keep.all():
        return Table(values, columns, (len(columns),), ids, id_name)
    stats.dropped += int((~keep).sum())
    if not keep.any():
        return None
    kept_ids = None if ids is None else [i for i, k in zip(ids, keep.tolist()) if k]
    return Table(values[keep], columns, (len(columns),), kept_ids, id_name)


_NUMBERS = {int, float, bool}


def _fast(objects: list[tuple[int, dict[str, Any]]], columns: list[str]) -> np.ndarray | None:
    """A column at a time when every value is a finite JSON number; None sends the chunk to
    the exact path, which names the first bad value (400,000 lines: 8.9 s, not 30)."""
    out = np.empty((len(objects), len(columns)), dtype=np.float32)
    try:
        for j, key in enumerate(columns):
            column = [obj[key] for _, obj in objects]
            if not set(map(type, column)) <= _NUMBERS:
                return None
            with np.errstate(over="ignore", invalid="ignore"):
                out[:, j] = np.array(column, dtype=np.float64)
    except (KeyError, OverflowError):
        return None
    return out if np.isfinite(out).all() else None


def _number(value: Any, key: str, number: int, name: str, allow_nan: bool) -> float | None:
    """A JSON value as a feature: a number or a bool; None when --allow-nan drops its row."""
    if value is _MISSING:
        raise DataError(f"no key {key!r} in this object", source=name, line=number)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        if allow_nan:
            return None
        what = "a null" if value is None else f"{value}"
        raise DataError(f"{what} at key {key!r} (--allow-nan drops such rows)", source=name,
                        line=number)  # fmt: skip
    if isinstance(value, bool | int | float):
        try:
            with np.errstate(over="ignore"):
                finite = bool(np.isfinite(np.float32(value)))
        except OverflowError:  # an integer beyond float64
            finite = False
        if not finite:
            raise DataError(f"{value!r} overflows float32 at key {key!r}", source=name, line=number)
        return float(value)
    shown = json.dumps(value)[:40]
    raise DataError(f"{shown} is not a number (key {key!r}){text_hint(key)}", source=name,
                    line=number)  # fmt: skip


def _id(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def format_jsonl(
    values: np.ndarray,
    columns: Sequence[str],
    ids: Any = None,
    id_name: str | None = None,
    integers: Sequence[int] = (),
) -> str:
    """One JSON object a row, the id first; floats in their shortest float32 form."""
    keys = [json.dumps(c) + ":" for c in columns]
    rows = np.asarray(values, dtype=np.float32)
    texts = as_text(ids) if ids is not None else None
    out = []
    for r, row in enumerate(rows):
        cells = [
            key + (str(int(v)) if j in integers else (str(v) if math.isfinite(v) else "null"))
            for j, (key, v) in enumerate(zip(keys, row))
        ]
        if id_name is not None:
            cells.insert(0, json.dumps(id_name) + ":" + json.dumps(texts[r] if texts else None))
        out.append("{" + ",".join(cells) + "}\n")
    return "".join(out)
