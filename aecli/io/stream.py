"""Whether a .npy is streamed in chunks or loaded whole: the memory decision."""

from __future__ import annotations

import os

from aecli.io.table import STDIO


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
