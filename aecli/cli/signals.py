"""Ctrl-C, SIGTERM and SIGHUP, handled once: each stops aecli the way Ctrl-C does.

``timeout``, ``docker stop``, batch schedulers and torchrun send SIGTERM, a
dropped ssh session SIGHUP. While the CLI runs, both raise the same
KeyboardInterrupt that Ctrl-C raises, so training saves its last finished
epoch for each of them (F31), and the exit code says which one it was:
128 + the signal number (130, 143, 129).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
NAMES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}
_received: list[int] = []
_polled: list[bool] = [False]


_held: list[bool] = [False]  # torch is being imported: a signal waits until it is whole


def _raise(signum: int, frame: Any) -> None:
    _received.append(signum)
    if not _polled[0] and not _held[0]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def polled() -> Iterator[None]:
    """Within: a signal is only recorded, for the code to ask ``requested()`` and stop itself.

    Processes training together under torchrun must stop at the same step: an
    exception raised in one of them mid-step would leave the others waiting for it.
    """
    _polled[0] = True
    try:
        yield
    finally:
        _polled[0] = False


def requested() -> bool:
    """Whether a signal has arrived."""
    return bool(_received)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Within: the three signals raise KeyboardInterrupt; previous handlers come back after."""
    _received.clear()
    try:
        previous = {sig: signal.signal(sig, _raise) for sig in HANDLED}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    sys.meta_path.insert(0, _HeldImport)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(_HeldImport)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _HeldImport:
    """Imports torch with the signals held off, whichever command loads it.

    A KeyboardInterrupt raised inside torch's import lands in its C++ module set-up, where
    pybind11 turns it into std::terminate: the process died with a C++ trace instead of
    "aecli: interrupted" (seen under load, in CI too). Blocking the signal in the main
    thread is not enough (another thread takes it, and Python still runs the handler in the
    main one), so the handler only records it while torch loads; it is raised once the
    import is whole, and handled like any other. Commands that never need torch, and
    usage errors, still never load it.
    """

    @classmethod
    def find_spec(cls, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "torch":
            return None
        for finder in sys.meta_path:
            if finder is cls or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _HeldLoader(spec.loader)
                return spec
        return None


class _HeldLoader:
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        arrived = len(_received)
        _held[0] = True
        try:
            self.loader.exec_module(module)
        finally:
            _held[0] = False
        if len(_received) > arrived and not _polled[0]:  # it came during the import
            raise KeyboardInterrupt


def last() -> int:
    """The first signal received (SIGINT when the interrupt came some other way)."""
    return _received[0] if _received else signal.SIGINT


def exit_code() -> int:
    return 128 + int(last())


def word() -> str:
    """What happened, for the one line on stderr: interrupted, terminated, hung up."""
    sig = last()
    return NAMES[sig] + ("" if sig == signal.SIGINT else f" ({signal.Signals(sig).name})")


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold the signals off while a file is written; they arrive once it is complete (F05)."""
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    except (AttributeError, ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
