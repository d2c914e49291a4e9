"""The ``aecli`` command line: parse flags, call the core, report on stderr.

Only this package prints. Data goes to stdout; progress, summaries and errors
go to stderr. torch, numpy and safetensors are imported inside the commands
that need them so that ``aecli --help`` stays fast.
"""

from __future__ import annotations

import copy
import errno
import io
import os
import sys
from collections.abc import Sequence
from typing import Any

import typer

from aecli.cli import reports, rows, signals, training
from aecli.cli.app import Command, app, one_line, tell
from aecli.errors import AecliError
from aecli.openmp import wait_briefly

__all__ = ["app", "main"]

# Every command, in the order --help and docs/cli.md list them.
COMMANDS = [
    training.train,
    rows.encode,
    rows.reconstruct,
    rows.sample,
    rows.features,
    rows.interpolate,
    reports.evaluate,
    reports.score,
    reports.info,
    reports.export,
    reports.example,
    reports.curves,
]
for _command in COMMANDS:
    app.command(cls=Command)(_command)


def _listing(callback: Any) -> Any:
    """A stand-in with no parameters that lists CALLBACK's command under the root help."""

    def listed() -> None:  # never runs: the named command is always the real one
        raise AssertionError(f"{callback.__name__} was not built")

    listed.__name__ = callback.__name__
    listed.__doc__ = callback.__doc__
    return listed


def _command_for(args: list[str]) -> Any:
    """The click group for ARGS, with only the command they name built for real.

    Typer turns every command's signature into click parameters up front, about 6 ms
    a command: the other commands are built as parameterless stand-ins that carry
    only their name and help, which is all the root help and click's "no such
    command" suggestions read (tests/test_cli.py checks that both are unchanged).
    """
    name = next((arg for arg in args if not arg.startswith("-")), None)
    lazy = copy.copy(app)
    lazy.registered_commands = [
        info
        if typer.main.get_command_name(info.callback.__name__) == name
        else typer.models.CommandInfo(cls=Command, callback=_listing(info.callback))
        for info in app.registered_commands
    ]
    return typer.main.get_command(lazy)


def _click_classes() -> tuple[type[BaseException], type[BaseException]]:
    """Click's exception classes, wherever this typer version keeps click."""
    mro = typer.BadParameter.__mro__
    by_name = {cls.__name__: cls for cls in mro}
    return by_name["ClickException"], by_name["UsageError"]


class _Closed(io.RawIOBase):
    """Stands in for a standard stream whose descriptor was closed (``>&-``).

    Python leaves such a stream None, and anything touching it crashed (F16,
    F24). Reading or writing one is an error naming it; a closed stderr just
    discards what aecli would have said, so a good run still exits 0.
    """

    def __init__(self, name: str, silent: bool = False) -> None:
        super().__init__()
        self.name_ = name
        self.silent = silent
        self.buffer = self

    def isatty(self) -> bool:
        return False

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise OSError(errno.EBADF, f"{self.name_} is closed")

    def write(self, data: Any) -> int:
        if self.silent:
            return len(data)
        raise OSError(errno.EBADF, f"{self.name_} is closed")

    def fileno(self) -> int:
        raise OSError(errno.EBADF, f"{self.name_} is closed")


def _closed_streams() -> None:
    if sys.stdin is None:
        sys.stdin = _Closed("stdin")  # type: ignore[assignment]
    if sys.stdout is None:
        sys.stdout = _Closed("stdout")  # type: ignore[assignment]
    if sys.stderr is None:
        sys.stderr = _Closed("stderr", silent=True)  # type: ignore[assignment]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; expected failures become one line on stderr and an exit code."""
    wait_briefly()  # before any command loads torch (aecli/openmp.py)
    _closed_streams()
    if not os.environ.get("AECLI_DEBUG"):
        # Libraries' warnings (file, line, source) are noise on a user's terminal;
        # aecli says what matters itself. AECLI_DEBUG=1 shows them.
        import warnings

        warnings.simplefilter("ignore")
    click_exception, click_usage_error = _click_classes()
    args = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("_AECLI_COMPLETE"):  # a shell asking for completions: click answers
        return _complete(args)
    command = _command_for(args)
    try:
        # Click's context directly, not command.main: typer's main turns a broken
        # pipe into exit 1 and Ctrl-C into a silent 130 before aecli can see them
        # (F19, F20). Exit codes are decided here, below.
        try:
            with signals.handled(), command.make_context("aecli", args) as ctx:
                result = command.invoke(ctx)
        except typer.Exit as exc:  # --help, --version, a command's own exit code
            result = exc.exit_code
        try:
            sys.stdout.flush()
        except OSError as exc:  # ``> /dev/full``: say it was stdout (F21)
            from aecli.io.write import name_stdout

            name_stdout(exc)
            raise
    except AecliError as exc:
        tell(f"aecli: error: {one_line(str(exc))}")
        return exc.exit_code
    except click_usage_error as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
            return 0
        where = ctx.command_path if ctx is not None else "aecli"
        tell(f"{where}: error: {exc.format_message()} (see '{where} --help')")  # type: ignore[attr-defined]
        return 2
    except click_exception as exc:
        tell(f"aecli: error: {exc.format_message()}")  # type: ignore[attr-defined]
        return exc.exit_code  # type: ignore[attr-defined]
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP outside training
        tell(f"aecli: {signals.word()}")
        return signals.exit_code()
    except OSError as exc:
        # A full disk, a permission problem: say which file, in one line.
        where = f"{exc.filename}: " if exc.filename else ""
        tell(f"aecli: error: {where}{exc.strerror or exc}")
        return 1
    except MemoryError:
        tell("aecli: error: out of memory (a smaller --batch-size, --hidden or --chunk-rows)")
        return 1
    except Exception as exc:
        if _peer_failure(exc):
            tell(
                "aecli: error: another training process failed or stopped answering "
                f"({one_line(str(exc))[:200]})"
            )
            return 1
        if "can't allocate memory" in str(exc) or type(exc).__name__ == "OutOfMemoryError":
            tell(f"aecli: error: out of memory ({one_line(str(exc))[:200]})")
            return 1
        # A bug in aecli. Users get one line and a way to see more; never locals.
        if os.environ.get("AECLI_DEBUG"):
            raise
        tell(
            f"aecli: internal error: {type(exc).__name__}: {one_line(str(exc))} "
            "(a bug; AECLI_DEBUG=1 shows the traceback)"
        )
        return 70
    finally:
        _leave_process_group()
    return result if isinstance(result, int) else 0


def _complete(args: list[str]) -> int:
    """Shell completion (``aecli --install-completion``), through click's own main.

    The full app, every command's flags included, is built only here.
    """
    try:
        typer.main.get_command(app).main(args, prog_name="aecli")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 0
    return 0


def _peer_failure(exc: Exception) -> bool:
    """An error of torch.distributed's transport: another process failed or hung."""
    text = str(exc)
    return type(exc).__name__.startswith("Dist") or "gloo" in text or "NCCL" in text


def _leave_process_group() -> None:
    """Under torchrun, leave the group on every way out (exiting in it aborts the process)."""
    # Only where aecli joined one: importing anything here could meet a torch whose
    # import a Ctrl-C cut short (it then fails, or registers its operators twice).
    training = sys.modules.get("aecli.training")
    if training is not None:
        training.leave_group()
