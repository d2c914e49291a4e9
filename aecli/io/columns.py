"""Which columns of a table are features: names, indices, the id column."""

from __future__ import annotations

import operator
from typing import Any

from aecli.errors import DataError, UsageError
from aecli.io.table import ReadOptions


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
    opts: ReadOptions, names: list[str] | None, width: int, source: str, header: bool = True
) -> tuple[list[int], int | None]:
    """Feature column indices and the id column index, from the options and the header.

    ``header``: the names come from a header line (CSV), which errors locate; Parquet and
    Arrow names come from a schema, which has no line.
    """
    id_index = None
    if opts.id_column is not None:
        id_index = _resolve_column(opts.id_column, names, width, source, "--id-column")
    elif opts.model_id_column is not None and names is not None and opts.model_id_column in names:
        id_index = names.index(opts.model_id_column)  # the model's own, remembered
    if opts.columns:
        features = [_resolve_column(c, names, width, source, "--columns") for c in opts.columns]
        check_distinct(list(opts.columns), features)
    elif opts.model_columns and names is not None and set(opts.model_columns) <= set(names):
        # A trained model picks its own columns by name, in its order; when the
        # header lacks some, all columns are passed on and the model's width
        # and name checks say what does not match.
        features = [names.index(c) for c in opts.model_columns]
    else:
        features = [i for i in range(width) if i != id_index]
    if id_index is not None and id_index in features:
        raise UsageError(
            f"{opts.id_column!r} is also one of the feature columns", flag="--id-column"
        )
    if not features:
        what = "no columns" if width == 0 else "no feature columns left besides the --id-column"
        raise DataError(what, source=source)
    if names is not None:
        picked = [*features, *([] if id_index is None else [id_index])]
        _check_names(names, picked, source, header)
    return features, id_index


def _check_names(names: list[str], picked: list[int], source: str, header: bool) -> None:
    """Columns read by name must have one (F01): an empty or repeated name is ambiguous.

    A model picks its columns by name from later files, so a second ``a``
    would never be read again, silently; such a header is refused instead.
    """
    for index in picked:
        name = names[index]
        if not name:
            raise DataError(
                f"column {index + 1} has no name{' in the header' if header else ''}; "
                "column names must be non-empty",
                source=source,
                line=1 if header else None,
                column=index + 1 if header else None,
            )
        same = [i + 1 for i, other in enumerate(names) if other == name]
        if len(same) > 1:
            where = ", ".join(map(str, same))
            place = (
                f"in the header {len(same)} times (columns "
                if header
                else f"on {len(same)} columns ("
            )
            raise DataError(
                f"column name {name!r} is {place}{where}); column names must be unique",
                source=source,
                line=1 if header else None,
                column=same[1] if header else None,
            )


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


def check_distinct(items: list[str], indices: list[int]) -> None:
    """--columns may not name one column twice (by name, by index or both)."""
    seen: set[int] = set()
    for item, index in zip(items, indices):
        if index in seen:
            raise UsageError(f"column {item!r} is named twice", flag="--columns")  # F23
        seen.add(index)
