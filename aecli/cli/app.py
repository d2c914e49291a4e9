"""The typer app, its root options, and the one way the CLI writes a line to stderr."""

from __future__ import annotations

import os
import re
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from aecli import __version__

app = typer.Typer(
    name="aecli",
    help="Train autoencoders on tables of numbers and use them from the shell.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
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


def tell(message: str) -> None:
    sys.stderr.write(_rank_tag() + message + "\n")
    sys.stderr.flush()


def _rank_tag() -> str:
    """Under torchrun the ranks other than 0 say which they are ("[rank 1] aecli: ...")."""
    rank, size = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    if rank in ("", "0") or size in ("", "1"):
        return ""
    return f"[rank {rank}] "


def one_line(message: str) -> str:
    """Errors are one line on stderr, whatever a library put in its message."""
    return " ".join(message.split())


# Generic type labels typer puts after a flag, in the words people know from
# other command lines; a choice list stays, in click's brackets.
_TYPE_LABELS = {"<str>": "TEXT", "<int>": "INTEGER", "<int range>": "INTEGER", "<float>": "FLOAT"}


class Command(TyperCommand):
    """Help that a person can scan: options in the sections the command declares.

    A command function may carry ``sections``, a list of (title, [parameter
    names]); options not named go under "Other options". Plain text, no rich:
    ``--help`` costs no more to start than before.
    """

    def format_options(self, ctx: Any, formatter: Any) -> None:
        records: dict[str, tuple[str, str]] = {}
        arguments = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            record = (_plain(record[0]), record[1])
            if param.param_type_name == "argument":
                arguments.append((record[0].split(" ")[0], record[1]))  # the name says it
            else:
                records[param.name or ""] = record
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        sections = getattr(self.callback, "sections", None) or [("Options", list(records))]
        named = {name for _, names in sections for name in names}
        rest = [name for name in records if name not in named]
        if rest:
            sections = [*sections, ("Other options" if named else "Options", rest)]
        for title, names in sections:
            rows = [records[name] for name in names if name in records]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [re.sub(r"^\{(.*)\}$", r"\1", piece) for piece in super().collect_usage_pieces(ctx)]


def _plain(flags: str) -> str:
    for label, word in _TYPE_LABELS.items():
        flags = flags.replace(label, word)
    return re.sub(r"<([^<>]*\|[^<>]*)>", r"[\1]", flags)
