"""An ``--id-column``'s values, carried as the reader gave them: text, or an Arrow array.

Parquet and Arrow ids stay the reader's own Arrow array, sliced and filtered but never
rebuilt from Python objects, so a nanosecond timestamp, a uint64 hash, a decimal(30, 9)
or a dictionary keeps its type and value through ``encode -o out.parquet`` (findings4
#2, #5). CSV ids are text. Each output asks for the form it writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Ids = Any  # list[str | None], or a pyarrow Array


def _is_arrow(ids: Ids) -> bool:
    return type(ids).__module__.startswith("pyarrow")


def concat(parts: Sequence[Ids]) -> Ids:
    """The ids of consecutive chunks as one."""
    if parts and all(_is_arrow(p) for p in parts):
        import pyarrow as pa

        return pa.chunked_array(parts, type=parts[0].type).combine_chunks()
    return [i for part in parts for i in as_text(part)]


def kept(ids: Ids, keep: Any) -> Ids:
    """The ids of the rows a boolean mask keeps."""
    if _is_arrow(ids):
        import pyarrow as pa

        return ids.filter(pa.array(keep))
    return [i for i, k in zip(ids, keep.tolist()) if k]


def as_text(ids: Ids) -> list[str | None]:
    """Text for CSV: Arrow values by Arrow's own cast (exact: nanoseconds, big integers)."""
    if not _is_arrow(ids):
        return list(ids)
    import pyarrow as pa

    try:
        return ids.cast(pa.string()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # bytes, nested values
        return [None if v is None else str(v) for v in ids.to_pylist()]


def as_arrow(ids: Ids) -> Any:
    """An Arrow array for Parquet and Arrow outputs: the reader's own, or text."""
    if _is_arrow(ids):
        return ids
    import pyarrow as pa

    return pa.array([None if i is None else str(i) for i in ids], type=pa.string())
