"""Lines from a pipe, a terminal or a socket, handed on when the input pauses (issue 37).

``tail -F events.csv | aecli score model -`` must answer row by row, as ``grep
--line-buffered`` does, not after a chunk of 65,536 rows. ``LiveLines`` reads what the
descriptor has (``select`` and ``os.read``: a fast pipe gives 64 KiB at a time, a slow
producer a line) and gives a batch back when it is full or when no byte has arrived for
``PAUSE`` seconds, whichever comes first. On a fast pipe batches stay full, so throughput
is a file's; memory holds one batch and one read, on an endless stream too.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

from aecli.io.lines import NumberedLines

PAUSE = 0.2  # seconds without a byte after which the rows read so far are handed on
_READ = 1 << 20


def live_source(stream: Any) -> bool:
    """Whether ``stream`` is a pipe, terminal or socket that ``LiveLines`` can wait on."""
    if sys.platform == "win32":  # select() takes sockets only there
        return False
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):  # a test's BytesIO, a closed stream
        return False
    import stat

    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


def live_lines(buffered: IO[bytes]) -> IO[bytes] | NumberedLines:
    """A pipe, terminal or socket as ``LiveLines`` (rows go on as they come), else as it is."""
    return LiveLines(buffered) if live_source(buffered) else buffered


class LiveLines(NumberedLines):
    """``NumberedLines`` of a descriptor, whose ``take`` returns early when the input pauses.

    ``buffered``: the reader the first bytes were peeked through; what it holds is taken
    first, then the descriptor is read directly.
    """

    def __init__(self, buffered: IO[bytes]) -> None:
        super().__init__(buffered)
        self.fd = buffered.fileno()
        self.pending = b""
        self.ready: list[bytes] = []
        self.ended = False
        held = buffered.peek(1) if hasattr(buffered, "peek") else b""  # type: ignore[attr-defined]
        if held:
            self._feed(buffered.read(len(held)))

    def __iter__(self) -> Iterator[bytes]:
        while True:
            batch = self.take(1)
            if not batch:
                return
            yield from batch

    def take(self, count: int) -> list[bytes]:
        """Up to ``count`` lines: fewer when the input has paused, none at its end."""
        waited_since = None
        while len(self.ready) < count and not self.ended:
            if self.ready:  # some rows are here: wait for more only as long as PAUSE
                waited_since = waited_since or time.monotonic()
                left = PAUSE - (time.monotonic() - waited_since)
                if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                    break
            self._read()
        batch, self.ready = self.ready[:count], self.ready[count:]
        self.number += len(batch)
        return batch

    def _read(self) -> None:
        """One read of what the descriptor has (blocking until something or the end)."""
        try:
            data = os.read(self.fd, _READ)
        except InterruptedError:
            return
        if not data:
            self.ended = True
            if self.pending:  # a last line without its newline
                self.ready.append(self.pending)
                self.pending = b""
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Complete lines to ``ready``, split on newlines only as a file's lines are (a bare
        CR stays in its line); the rest waits in ``pending``."""
        data = self.pending + data
        cut = data.rfind(b"\n") + 1
        self.pending = data[cut:]
        if cut:
            self.ready.extend(line + b"\n" for line in data[: cut - 1].split(b"\n"))
