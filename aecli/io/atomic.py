"""Files that appear complete or not at all, and the refusal to overwrite an input."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from aecli.errors import DataError, UsageError
from aecli.io.table import STDIO


class AtomicFile:
    """A file that appears at ``dest`` only when ``commit`` is called, complete.

    On Linux the data goes to an anonymous ``O_TMPFILE`` inode in the target's
    directory, so a crash or ``kill -9`` leaves nothing behind at all; commit
    links it under a temporary name and renames that over ``dest`` (atomic
    on POSIX). Elsewhere a named temporary sibling is used and removed on
    failure. Until commit, a previous file at ``dest`` is never touched.
    """

    def __init__(self, dest: str, flag: str = "-o") -> None:
        target = Path(dest)
        if target.is_dir():
            raise UsageError(f"{dest!r} is a directory", flag=flag)
        parent = target.parent
        if not parent.is_dir():
            raise DataError("directory does not exist", source=str(parent))
        self.dest = dest
        self._named: str | None = None
        try:
            fd = os.open(parent, os.O_TMPFILE | os.O_WRONLY, 0o666)  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115
                dir=parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
            )
            self.file: IO[bytes] = tmp
            self._named = tmp.name
        else:
            self.file = os.fdopen(fd, "wb")

    def commit(self) -> None:
        """Flush to disk and move into place."""
        self.file.flush()
        os.fsync(self.file.fileno())
        parent = os.path.dirname(os.path.abspath(self.dest))
        if self._named is None:
            name = os.path.join(parent, f".{os.path.basename(self.dest)}.{os.getpid()}.tmp")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            # linkat(AT_SYMLINK_FOLLOW) through /proc gives the anonymous inode a name.
            proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.link(str(self.file.fileno()), name, src_dir_fd=proc, follow_symlinks=True)
            finally:
                os.close(proc)
            self.file.close()
        else:
            name = self._named
            self.file.close()
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(name, 0o666 & ~umask)
        try:
            os.replace(name, self.dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise
        with contextlib.suppress(OSError):
            dirfd = os.open(parent, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)

    def discard(self) -> None:
        """Forget the data; ``dest`` stays as it was."""
        self.file.close()
        if self._named is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._named)


def refuse_overwrite(dest: str, protect: Sequence[str], flag: str) -> None:
    """A usage error when ``dest`` is one of the command's inputs (same file, any path)."""
    for other in protect:
        if other in (None, STDIO):
            continue
        try:
            same = os.path.samefile(dest, other)
        except OSError:
            same = False
        if same:
            raise UsageError(
                f"{dest!r} is an input of this command; refusing to overwrite it", flag=flag
            )


def write_bytes_atomic(
    dest: str, data: bytes, *, protect: Sequence[str] = (), flag: str = "-o"
) -> None:
    """Write a whole file (a model) atomically: temp file, fsync, rename."""
    refuse_overwrite(dest, protect, flag)
    target = AtomicFile(dest, flag)
    try:
        target.file.write(data)
        target.commit()
    except BaseException:
        target.discard()
        raise
