"""Which columns of a table are features: names, indices, the id column."""

from __future__ import annotations

import operator
from typing import Any

from aecli.errors import DataError, UsageError
from aecli.io.table import ReadOptions


def picker(features: list[int], width: int) -> Any:
    """A fast row -> selected cells function, or None when every column is a feature."""
    if features == list(range(width)):
        return None
    if len(features) == 1:
        index = features[0]
        return lambda row: [row[index]]
    getter = operator.itemgetter(*features)
    return lambda row: list(getter(row))


def select_columns(
    opts: ReadOptions, names: list[str] | None, width: int, source: str, header: bool = True
) -> tuple[list[int], int | None]:
    """Feature column indices and the id column index, from the options and the header.

    ``header``: the names come from a header line (CSV), which errors locate; Parquet and
    Arrow names come from a schema, which has no line.
    """
    id_index = None
    if opts.id_column is not None:
        id_index = resolve_column(opts.id_column, names, width, source, "--id-column")
    elif opts.model_id_column is not None and names is not None and opts.model_id_column in names:
        id_index = names.index(opts.model_id_column)  # the model's own, remembered
    if opts.columns:
        items, features = _expand(opts.columns, names, width, source, "--columns")
        check_distinct(items, features)
    elif opts.model_columns and names is not None and set(opts.model_columns) <= set(names):
        # A trained model picks its own columns by name, in its order; when the
        # header lacks some, all columns are passed on and the model's width
        # and name checks say what does not match.
        features = [names.index(c) for c in opts.model_columns]
    else:
        features = [i for i in range(width) if i != id_index]
    if opts.exclude:
        _, left_out = _expand(opts.exclude, names, width, source, "--exclude")
        features = [i for i in features if i not in set(left_out)]
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


def _expand(
    items: tuple[str, ...], names: list[str] | None, width: int, source: str, what: str
) -> tuple[list[str], list[int]]:
    """Each item as the columns it means: a name or index, a range, or a glob over names.

    ``3-7`` is columns 3 to 7 inclusive and ``3:8`` the same as a Python slice (0-based, as
    indices are); ``feat_*`` (``*``, ``?``, ``[...]``) the names that match, in file order.
    A header name is taken as itself first, so a column called ``a-b`` is still that column.
    """
    import fnmatch
    import re

    said, indices = [], []
    for raw in items:
        item = raw.strip()
        span = re.fullmatch(r"(\d+)\s*([-:])\s*(\d+)", item)
        if (names is not None and item in names) or (span is None and not _glob(item)):
            said.append(item)
            indices.append(resolve_column(item, names, width, source, what))
        elif span is not None:
            low, high = int(span.group(1)), int(span.group(3)) + (span.group(2) == "-")
            if not low < high <= width:
                rule = "A-B is inclusive, A:B a slice" if low < high else "A comes before B"
                raise DataError(
                    f"column range {item!r} is not within 0..{width - 1} ({what}); the file "
                    f"has {width} columns ({rule})",
                    source=source,
                )
            said += [str(i) for i in range(low, high)]
            indices += list(range(low, high))
        else:
            matched = [i for i, n in enumerate(names or []) if fnmatch.fnmatchcase(n, item)]
            if not matched:
                shown = ", ".join((names or [])[:12]) + (", ..." if len(names or []) > 12 else "")
                have = f"its columns are {shown}" if names else "it has no header"
                raise DataError(f"no column matches {item!r} ({what}); {have}", source=source)
            said += [(names or [])[i] for i in matched]
            indices += matched
    return said, indices


def _glob(item: str) -> bool:
    return any(ch in item for ch in "*?[")


def resolve_column(item: str, names: list[str] | None, width: int, source: str, what: str) -> int:
    """A column by header name, else by 0-based index."""
    item = item.strip()
    if names is not None and item in names:
        return names.index(item)
    if item.isdigit() and int(item) < width:
        return int(item)
    if names is not None:
        from aecli.io.cells import delimiter_hint

        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        have = f"its columns are {shown}" + (delimiter_hint(names[0]) if len(names) == 1 else "")
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
