"""Options shared by several commands, and how they become reading options."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aecli.choices import Choice, choice
from aecli.cli.app import tell
from aecli.errors import UsageError

if TYPE_CHECKING:
    pass


# -- shared options ------------------------------------------------------------
def _one_stdin(ctx: typer.Context, value: str) -> str:
    """MODEL and DATA cannot both be stdin."""
    if value == "-" and ctx.params.get("model") == "-":
        raise typer.BadParameter("MODEL is read from stdin already; give DATA as a file")
    return value


# Every format each side takes: docs/formats.md lists the same (a test compares them).
INPUT_FORMATS = ".csv, .tsv (optionally .gz), .npy, .parquet, .arrow/.feather or .jsonl"
OUTPUT_FORMATS = ".csv, .tsv, .csv.gz, .npy, .parquet, .arrow, .jsonl"

DataArg = Annotated[
    str,
    typer.Argument(
        help=f"A {INPUT_FORMATS} file, or - for stdin (recognised by its first bytes).",
        metavar="DATA",
        callback=_one_stdin,
    ),
]
ModelArg = Annotated[
    str,
    typer.Argument(
        help="A model file written by 'aecli train', or - for stdin ('train -o -' writes one).",
        metavar="MODEL",
    ),
]
OutputOpt = Annotated[
    str,
    typer.Option(
        "--output",
        "-o",
        metavar="PATH",
        help=f"Output file; the format follows the extension ({OUTPUT_FORMATS}). - or "
        "nothing writes CSV to stdout.",
    ),
]


# Click, wherever this typer version keeps it (typer 0.2x vendors its own copy).
_CLICK = typer.BadParameter.__module__.rsplit(".", 1)[0]


class ChoiceOf(importlib.import_module(f"{_CLICK}.types").ParamType):  # type: ignore[misc]
    """A closed choice's flag, parsed by ``aecli.choices.choice``: the one check of a kind, a
    loss... (the estimator's parameters go through it too); case-insensitive, completed."""

    name = "choice"

    def __init__(self, enum: type[Choice], flag: str) -> None:
        self.enum, self.flag = enum, flag

    def convert(self, value: Any, param: Any, ctx: Any) -> Choice:
        try:
            return choice(self.enum, value, self.flag)
        except UsageError as exc:
            self.fail(str(exc).removeprefix(f"{self.flag}: "), param, ctx)

    def get_metavar(self, param: Any, ctx: Any = None) -> str:
        return "[" + "|".join(str(member) for member in self.enum) + "]"

    def shell_complete(self, ctx: Any, param: Any, incomplete: str) -> list[Any]:
        CompletionItem = importlib.import_module(f"{_CLICK}.shell_completion").CompletionItem

        words = (str(member) for member in self.enum)
        return [CompletionItem(word) for word in words if word.startswith(incomplete.lower())]


class StdoutFormat(Choice):
    csv = "csv"
    jsonl = "jsonl"


FormatOpt = Annotated[
    StdoutFormat,
    typer.Option(
        "--format",
        click_type=ChoiceOf(StdoutFormat, "--format"),
        help="What stdout carries: CSV with a header, or JSON Lines (one object a row, the id "
        "first). A file's format follows its extension.",
    ),
]
HeaderOpt = Annotated[
    bool | None,
    typer.Option(
        "--header/--no-header",
        help="Whether the first CSV row holds names. Default: it does if it is not all numbers.",
        show_default=False,
    ),
]
DelimiterOpt = Annotated[
    str | None,
    typer.Option(
        help="CSV field delimiter. Default: from the extension (, or tab).", show_default=False
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
ColumnsOpt = Annotated[
    str | None,
    typer.Option(
        metavar="COLS",
        help="Feature columns, by header name, 0-based index, range or glob: a,b,c or 0,3,4 "
        "or 1-21 (inclusive) or 1:22 (a slice) or 'feat_*'. Default: all but the --id-column "
        "and --exclude (for a trained model: its own columns, picked by name).",
        show_default=False,
    ),
]
ExcludeOpt = Annotated[
    str | None,
    typer.Option(
        metavar="COLS",
        help="Columns to leave out (a label, a timestamp), as --columns names them: "
        "label or 0,5 or 'meta_*'. A model records the columns it was trained on.",
        show_default=False,
    ),
]
IdColumnOpt = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="A column (name or index) carried through as text to every output row, "
        "not used as a feature.",
        show_default=False,
    ),
]
IdColumnReadOpt = Annotated[
    str | None,
    typer.Option(
        "--id-column",
        metavar="NAME",
        help="A column (name or index) of ids or other text, read past: not a feature.",
        show_default=False,
    ),
]
AllowNanOpt = Annotated[
    bool,
    typer.Option(
        "--allow-nan",
        help="Drop rows holding NaN, inf or missing cells (empty, NA, null) instead of "
        "failing; the count goes to stderr.",
    ),
]


GridOutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        metavar="PATH",
        help=f"Output file ({OUTPUT_FORMATS}) or - for stdout. Default: stdout, "
        "or nothing with --grid.",
        show_default=False,
    ),
]
GridOpt = Annotated[
    str | None,
    typer.Option(
        metavar="PNG",
        help="Also draw the rows as an image grid into this .png (needs the plot extra: "
        "pip install '.[plot]').",
        show_default=False,
    ),
]
ImageShapeOpt = Annotated[
    str | None,
    typer.Option(
        metavar="HxW",
        help="Height x width of one image, e.g. 8x8. Default: the .npy rows' own shape.",
        show_default=False,
    ),
]


def reading_options(
    header: bool | None,
    delimiter: str | None,
    columns: str | None,
    id_column: str | None,
    allow_nan: bool,
    model_columns: Sequence[str] | None = None,
    exclude: str | None = None,
) -> dict[str, Any]:
    """The reader's keyword options from the shared flags."""
    delimiter = _delimiter(delimiter)
    return {
        "header": header,
        "delimiter": delimiter,
        "columns": _column_list(columns, "--columns"),
        "exclude": _column_list(exclude, "--exclude"),
        "id_column": id_column,
        "allow_nan": allow_nan,
        "model_columns": tuple(model_columns) if model_columns else None,
    }


def _column_list(text: str | None, flag: str) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(c.strip() for c in text.split(","))
    if not all(names):
        raise UsageError(f"empty column name in {text!r}", flag=flag)
    return names


_DELIMITER_ESCAPES = {"\\t": "\t", "tab": "\t"}


def _delimiter(text: str | None) -> str | None:
    """One character; a typed ``\\t`` (or ``tab``) means a tab, as in a shell (F13)."""
    if text is None:
        return None
    text = _DELIMITER_ESCAPES.get(text, text)
    if len(text) != 1 or text in '\r\n"':
        raise UsageError(
            f"must be one character (or \\t for a tab), got {text!r}", flag="--delimiter"
        )
    return text


def report_dropped(dropped: int, source: str, quiet: bool = False) -> None:
    if dropped and not quiet:
        tell(f"aecli: dropped {dropped} rows of {source} with NaN, inf or missing cells")
