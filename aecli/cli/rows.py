"""Commands that turn rows into rows: encode, reconstruct, sample, features, interpolate."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aecli.cli.options import (
    AllowNanOpt,
    ColumnsOpt,
    DataArg,
    DelimiterOpt,
    ExcludeOpt,
    FormatOpt,
    GridOpt,
    GridOutputOpt,
    HeaderOpt,
    IdColumnOpt,
    IdColumnReadOpt,
    ImageShapeOpt,
    ModelArg,
    OutputOpt,
    StdoutFormat,
    reading_options,
    report_dropped,
)
from aecli.errors import UsageError

if TYPE_CHECKING:
    from aecli.fitted import FittedModel


def encode(
    model: ModelArg,
    data: DataArg,
    output: OutputOpt = "-",
    stdout_format: FormatOpt = StdoutFormat.csv,
    columns: ColumnsOpt = None,
    id_column: IdColumnOpt = None,
    exclude: ExcludeOpt = None,
    allow_nan: AllowNanOpt = False,
    header: HeaderOpt = None,
    delimiter: DelimiterOpt = None,
) -> None:
    """Write the codes of DATA's rows (a VAE gives the posterior mean), columns z0, z1, ..."""
    options = (header, delimiter, columns, id_column, allow_nan, exclude)
    _transform(model, data, output, options, codes=True, stdout_format=stdout_format)


def reconstruct(
    model: ModelArg,
    data: DataArg,
    output: GridOutputOpt = None,
    stdout_format: FormatOpt = StdoutFormat.csv,
    grid: GridOpt = None,
    image_shape: ImageShapeOpt = None,
    show: Annotated[int, typer.Option(help="Rows drawn by --grid.", min=1)] = 20,
    columns: ColumnsOpt = None,
    id_column: IdColumnOpt = None,
    exclude: ExcludeOpt = None,
    allow_nan: AllowNanOpt = False,
    header: HeaderOpt = None,
    delimiter: DelimiterOpt = None,
) -> None:
    """Write DATA's rows passed through the autoencoder, in the original units.

    With --grid, the first --show rows are drawn above their reconstructions.
    """
    options = (header, delimiter, columns, id_column, allow_nan, exclude)
    fmt = stdout_format
    if grid is None:
        _transform(model, data, output or "-", options, codes=False, stdout_format=fmt)
        return
    from aecli import pictures

    pictures.check_target(grid, "--grid")

    def draw(fitted: FittedModel, first: Any) -> None:
        shape = _drawn_shape(fitted, first.row_shape)
        height, width = pictures.image_shape(shape, fitted.config.n_inputs, image_shape)
        rows = first.values[:show]
        shape = (-1, height, width)
        recon = fitted.reconstruct(rows).reshape(shape)
        labels = ("original", "reconstruction")
        pairs = pictures.pairs(rows.reshape(shape), recon)
        pictures.save_grid(grid, pairs, 10, protect=[data, model], row_labels=labels)

    # The rows too only when -o is given; DATA is read once either way (it may be stdin).
    _transform(model, data, output, options, codes=False, on_first=draw, stdout_format=fmt)


def _transform(
    model_path: str,
    data: str,
    output: str | None,
    options: tuple[Any, ...],
    *,
    codes: bool,
    on_first: Callable[[FittedModel, Any], None] | None = None,
    stdout_format: str = "csv",
) -> None:
    """Stream DATA through the model chunk by chunk, keeping row order.

    ``on_first`` sees the first chunk before anything is written (pictures);
    ``output`` None writes no rows.
    """
    from aecli import modelfile
    from aecli.io import TableWriter

    fitted = modelfile.load(model_path)
    with model_input(fitted, data, options) as (first, chunks):
        if on_first is not None:
            on_first(fitted, first)
        if output is None:
            return
        if codes:
            columns, row_shape = fitted.code_names, (fitted.config.latent,)
        else:
            columns, row_shape = fitted.column_names, _row_shape(fitted, first.row_shape)
        apply = fitted.encode if codes else fitted.reconstruct
        protect = [data, model_path]
        id_name = carried_id(first, options, output)
        with TableWriter(
            output, columns, row_shape, protect=protect, id_name=id_name,
            stdout_format=stdout_format,
        ) as writer:  # fmt: skip
            for chunk in chunks:
                writer.write(apply(chunk.values), chunk.ids if id_name else None)


class model_input:
    """Open DATA for a trained model: check its first chunk, report dropped rows at the end.

    Yields the first chunk (for names and shapes) and an iterator over all
    chunks, the first included.
    """

    def __init__(self, fitted: FittedModel, data: str, options: tuple[Any, ...]) -> None:
        self.fitted, self.data, self.options = fitted, data, options

    def __enter__(self) -> tuple[Any, Any]:
        import itertools

        from aecli.io import ReadStats, describe, iter_table

        self.stats = ReadStats()
        header, delimiter, columns, id_column, allow_nan, exclude = self.options
        reading = reading_options(
            header, delimiter, columns, id_column, allow_nan, self.fitted.columns, exclude
        )
        reading["model_id_column"] = self.fitted.id_column
        chunks = iter_table(self.data, stats=self.stats, **reading)
        first = next(chunks)
        self.fitted.check_input(first, describe(self.data))
        return first, itertools.chain([first], chunks)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        from aecli.io import describe

        if exc is None:
            report_dropped(self.stats.dropped, describe(self.data))


def carried_id(first: Any, options: tuple[Any, ...], output: str | None) -> str | None:
    """The id column outputs lead with: the one asked for, or the model's own where it fits.

    A remembered id column is left out of a .npy output (no text there), not an error.
    """
    asked = options[3]
    if asked is None and output is not None and output.lower().endswith(".npy"):
        return None
    return first.id_name


def _drawn_shape(fitted: FittedModel, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Images are drawn in the input's image shape, else in the one the model keeps."""
    return input_shape if len(input_shape) in (2, 3) else fitted.row_shape


def _row_shape(fitted: FittedModel, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Outputs keep the input's row shape when it has the model's width."""

    if math.prod(input_shape) == fitted.config.n_inputs:
        return input_shape
    return fitted.row_shape


def sample(
    model: ModelArg,
    n: Annotated[int, typer.Option("-n", "--n", help="Number of rows to draw.", min=1)] = 10,
    seed: Annotated[
        int | None,
        typer.Option(help="Random seed; default: different every run.", show_default=False),
    ] = None,
    output: GridOutputOpt = None,
    grid: GridOpt = None,
    image_shape: ImageShapeOpt = None,
) -> None:
    """Draw new rows from a VAE: decode z ~ N(0, I) into the original units."""
    if seed is not None and not 0 <= seed < 2**63:
        raise UsageError(f"must be in [0, 2^63), got {seed}", flag="--seed")  # F15
    from aecli import modelfile
    from aecli.io import TableWriter

    shape = None
    if grid is not None:
        from aecli import pictures

        pictures.check_target(grid, "--grid")
    fitted = modelfile.load(model)
    if grid is not None:
        shape = pictures.image_shape(fitted.row_shape, fitted.config.n_inputs, image_shape)
    blocks = fitted.sample_blocks(n, seed)  # refuses a model that is not a vae
    if shape is None:  # a table only: drawn and written block by block (F11)
        target = output or "-"
        with TableWriter(target, fitted.column_names, fitted.row_shape, protect=[model]) as w:
            for block in blocks:
                w.write(block)
        return
    rows = fitted.sample(n, seed)
    if output is not None:
        with TableWriter(output, fitted.column_names, fitted.row_shape, protect=[model]) as w:
            w.write(rows)
    if shape is not None:
        pictures.save_grid(grid, rows.reshape(-1, *shape), 10, protect=[model])  # type: ignore[arg-type]


def features(
    model: ModelArg,
    grid: Annotated[
        str,
        typer.Option(help="The .png to draw into (needs the plot extra: pip install '.[plot]')"),
    ],
    image_shape: ImageShapeOpt = None,
    show: Annotated[int, typer.Option(help="How many units to draw.", min=1)] = 64,
) -> None:
    """Draw the first layer's weights (conv: its kernels), one image per unit."""
    from aecli import modelfile, pictures

    pictures.check_target(grid, "--grid")
    fitted = modelfile.load(model)
    weights = fitted.first_layer_weights()[:show]
    if weights.ndim == 4:  # conv kernels (units x C x 3 x 3): channels one above the other
        images = weights.reshape(len(weights), -1, weights.shape[-1])
    else:
        shape = pictures.image_shape(fitted.row_shape, fitted.config.n_inputs, image_shape)
        images = weights.reshape(-1, *shape)
    columns = min(len(images), max(8, int(len(images) ** 0.5)))
    pictures.save_grid(grid, images, columns, diverging=True, protect=[model])


def interpolate(
    model: ModelArg,
    data: DataArg,
    rows: Annotated[
        str, typer.Option(help="Two 0-based row numbers of DATA to go between, e.g. 0,7.")
    ] = "0,1",
    steps: Annotated[
        int, typer.Option(help="Points from the first row to the second.", min=2, max=1_000_000)
    ] = 8,
    output: GridOutputOpt = None,
    grid: GridOpt = None,
    image_shape: ImageShapeOpt = None,
    columns: ColumnsOpt = None,
    id_column: IdColumnReadOpt = None,
    exclude: ExcludeOpt = None,
    header: HeaderOpt = None,
    delimiter: DelimiterOpt = None,
) -> None:
    """Decode evenly spaced points on the line between two rows' codes (a latent walk)."""

    from aecli import modelfile
    from aecli.io import TableWriter, describe, pick_rows

    try:
        first_row, second_row = (int(r) for r in rows.split(","))
    except ValueError:
        raise UsageError(
            f"expected two row numbers such as 0,7, got {rows!r}", flag="--rows"
        ) from None
    if grid is not None:
        from aecli import pictures

        pictures.check_target(grid, "--grid")
    fitted = modelfile.load(model)
    wanted = {first_row, second_row}
    options = (header, delimiter, columns, id_column, False, exclude)
    with model_input(fitted, data, options) as (first, chunks):
        shape = first.row_shape
        found, seen = pick_rows(chunks, wanted)
    missing = sorted(wanted - found.keys())
    if missing:
        raise UsageError(
            f"{describe(data)} has {seen} rows; there is no row {missing[0]}", flag="--rows"
        )
    path = fitted.interpolate(found[first_row], found[second_row], steps)
    if grid is None or output is not None:
        with TableWriter(
            output or "-", fitted.column_names, _row_shape(fitted, shape), protect=[data, model]
        ) as writer:
            writer.write(path)
    if grid is not None:
        drawn = _drawn_shape(fitted, shape)
        height, width = pictures.image_shape(drawn, fitted.config.n_inputs, image_shape)
        pictures.save_grid(grid, path.reshape(-1, height, width), steps, protect=[data, model])


# -- evaluate / score --------------------------------------------------------------
