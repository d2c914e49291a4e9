"""Files that appear complete or not at all, and the refusal to overwrite an input."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO

from aecli.errors import UsageError
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
        check_output(dest, flag)
        self._named: str | None = None
        self._direct = is_special(dest)
        if self._direct:  # a FIFO or a device (through any links): stream into it (F02)
            self.dest = dest
            self.file: IO[bytes] = open(dest, "wb")  # noqa: SIM115
            return
        # A symlink to a file is followed: its target is replaced and the link stays.
        self.dest = os.path.realpath(dest)
        parent = os.path.dirname(self.dest)
        _remove_strays(parent)
        try:
            fd = os.open(parent, os.O_TMPFILE | os.O_WRONLY, 0o666)  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            # A short name of aecli's own: a long target name would not fit (F06).
            tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115
                dir=parent, prefix=".aecli-", suffix=".tmp", delete=False
            )
            self.file = tmp
            self._named = tmp.name
        else:
            self.file = os.fdopen(fd, "wb")

    def commit(self) -> None:
        """Flush to disk and move into place."""
        self.file.flush()
        if self._direct:
            self.file.close()
            return
        os.fsync(self.file.fileno())
        parent = os.path.dirname(self.dest)
        with contextlib.suppress(OSError):  # F28: a replaced file keeps its permissions
            os.fchmod(self.file.fileno(), stat.S_IMODE(os.stat(self.dest).st_mode))
        name = self._named
        try:  # from the moment the data has a name, any failure (or Ctrl-C) removes it
            if name is None:
                name = os.path.join(parent, f".aecli-{os.getpid()}-{os.urandom(4).hex()}.tmp")
                # linkat(AT_SYMLINK_FOLLOW) through /proc gives the anonymous inode a name.
                proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.link(str(self.file.fileno()), name, src_dir_fd=proc, follow_symlinks=True)
                finally:
                    os.close(proc)
                self.file.close()
            else:
                self.file.close()
                if not os.path.exists(self.dest):
                    umask = os.umask(0)
                    os.umask(umask)
                    os.chmod(name, 0o666 & ~umask)
            os.replace(name, self.dest)
        except BaseException:
            if name is not None:
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
        """Forget the data; ``dest`` stays as it was.

        Closing flushes what is buffered, which fails again on a full device: that second
        error would replace the first, named one (``export -o /dev/full``, findings4 #11).
        """
        with contextlib.suppress(OSError):
            self.file.close()
        if self._named is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._named)


_STRAY = re.compile(r"^\.aecli-(\d+)-[0-9a-f]{8}\.tmp$")


def _remove_strays(folder: str) -> None:
    """F27: a ``kill -9`` between naming a temporary and renaming it leaves it behind;
    the next write into the folder removes those whose process is gone."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = _STRAY.match(entry.name)
            if match is None or int(match.group(1)) == os.getpid():
                continue
            try:
                os.kill(int(match.group(1)), 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            except OSError:
                pass  # alive (another user's): leave it


def check_output(
    dest: str, flag: str, *, inputs: Sequence[str | None] = (), binary: bool = False
) -> None:
    """Every output path is checked here, before any work starts.

    ``-`` is stdout (refused for binary data on a terminal). Otherwise the
    directory must exist, the path may not be a directory, and it may not be
    one of the command's ``inputs`` (the same file by any path or link). A
    FIFO or device is fine: it is streamed into, never replaced.
    """
    if dest == STDIO:
        try:
            sys.stdout.fileno()
        except OSError as exc:  # a closed descriptor (>&-) is known now, not after the work
            if exc.errno == errno.EBADF:
                raise UsageError("stdout is closed", flag=flag) from None
        if binary and sys.stdout.isatty():
            raise UsageError("refusing to write binary data to a terminal", flag=flag)
        return
    refuse_overwrite(dest, inputs, flag)
    if is_special(dest):
        return
    real = os.path.realpath(dest)
    limit = _path_max()
    if len(os.fsencode(real)) >= limit:  # findings4 #13: not "directory '.' does not exist"
        raise UsageError(
            f"{dest!r} is {len(os.fsencode(real))} bytes as a full path, beyond this system's "
            f"limit of {limit}; write it from a shorter working directory",
            flag=flag,
        )
    if os.path.isdir(real):
        raise UsageError(f"{dest!r} is a directory", flag=flag)
    parent = os.path.dirname(real)
    if not os.path.isdir(parent):
        raise UsageError(f"directory {os.path.dirname(dest) or '.'!r} does not exist", flag=flag)
    if not os.access(parent, os.W_OK):
        raise UsageError(f"directory {os.path.dirname(dest) or '.'!r} is not writable", flag=flag)


def is_special(path: str) -> bool:
    """A FIFO, character or block device: something to stream into, not a file to replace."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def _path_max() -> int:
    try:
        return os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        return 4096


def refuse_overwrite(dest: str, protect: Sequence[str | None], flag: str) -> None:
    """A usage error when ``dest`` is one of the command's inputs (same file, any path)."""
    for other in protect:
        if other in (None, STDIO):
            continue
        try:
            same = os.path.samefile(dest, other)
        except OSError:  # one does not exist yet: the same path is still the same file
            same = os.path.realpath(dest) == os.path.realpath(other)
        if same:
            raise UsageError(
                f"{dest!r} is an input of this command; refusing to overwrite it", flag=flag
            )


@contextlib.contextmanager
def naming_file(path: str) -> Iterator[None]:
    """A write error (a full disk, a quota) names the file it was for (findings3 #14).

    The data goes to an unnamed temporary inode, so the OS error carries no name.
    """
    try:
        yield
    except OSError as exc:
        if exc.filename is None and not isinstance(exc, BrokenPipeError):
            exc.filename = path
        raise


def write_bytes_atomic(
    dest: str, data: bytes, *, protect: Sequence[str] = (), flag: str = "-o"
) -> None:
    """Write a whole file (a model) atomically: temp file, fsync, rename."""
    refuse_overwrite(dest, protect, flag)
    target = AtomicFile(dest, flag)
    try:
        with naming_file(dest):
            target.file.write(data)
            target.commit()
    except BaseException:
        target.discard()
        raise
