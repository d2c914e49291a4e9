"""The typer app, its root options, and the one way the CLI writes a line to stderr."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from aecli import __version__

if TYPE_CHECKING:
    pass


app = typer.Typer(
    name="aecli",
    help="Train autoencoders on tables of numbers and use them from the shell.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aecli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Train autoencoders on tables of numbers and use them from the shell."""


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _one_line(message: str) -> str:
    """Errors are one line on stderr, whatever a library put in its message."""
    return " ".join(message.split())
