"""Whether a .npy is streamed in chunks or loaded whole: the memory decision."""

from __future__ import annotations

import os

from aecli.io.table import STDIO

STREAMABLE = (".npy", ".parquet", ".pq")  # formats read by row range from disk


def should_stream(source: str, chunk_rows: int) -> bool:
    """Train from a .npy or Parquet file in chunks: when asked (``chunk_rows``), or when too big.

    Too big: its float32 rows would take more than a quarter of the memory
    available now (MemAvailable on Linux).
    """
    streamable = source.lower().endswith(STREAMABLE)
    if source == STDIO or not streamable or not os.path.isfile(source):
        return False
    if chunk_rows > 0:
        return True
    available = _available_memory()
    return available is not None and _loaded_bytes(source) * 2 > available // 4


def _loaded_bytes(source: str) -> int:
    """What the rows take as float32 once loaded (a Parquet file's size says less)."""
    if source.lower().endswith(".npy"):
        return os.path.getsize(source)
    try:
        import pyarrow.parquet as pq

        metadata = pq.read_metadata(source)
    except Exception:  # damaged: loading it says what is wrong
        return 0
    return int(metadata.num_rows) * int(metadata.num_columns) * 4


def disk_rows(source: str, **options: object) -> object:
    """The reader that serves a .npy or a Parquet file by row range (the order's OnDisk)."""
    if source.lower().endswith(".npy"):
        from aecli.io.npy import NpyRows

        return NpyRows(source, **options)
    from aecli.io.spool import ParquetRows

    return ParquetRows(source, **options)


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
