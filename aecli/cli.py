"""The ``aecli`` command line: parse flags, call the core, report on stderr.

Only this module prints. Data goes to stdout; progress, summaries and errors
go to stderr. torch, numpy and safetensors are imported inside the commands
that need them so that ``aecli --help`` stays fast.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aecli import __version__
from aecli.config import (
    Activation,
    Kind,
    Loss,
    ModelConfig,
    Noise,
    Precision,
    Scale,
    TrainConfig,
)
from aecli.errors import AecliError, TrainingError, UsageError

if TYPE_CHECKING:
    from aecli.fitted import FittedModel
    from aecli.train import EpochStats

# Defaults are written once, in the config dataclasses; flags and aecli.Autoencoder read them.
_M, _T = ModelConfig(), TrainConfig()

app = typer.Typer(
    name="aecli",
    help="Train autoencoders on tables of numbers and use them from the shell.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# -- shared options ------------------------------------------------------------
DataArg = Annotated[
    str,
    typer.Argument(
        help="A .csv, .tsv (optionally .gz) or .npy file, or - for stdin.", metavar="DATA"
    ),
]
ModelArg = Annotated[
    str, typer.Argument(help="A model file written by 'aecli train'.", metavar="MODEL")
]
OutputOpt = Annotated[
    str,
    typer.Option(
        "--output",
        "-o",
        metavar="PATH",
        help="Output file; the format follows the extension (.csv, .tsv, "
        ".csv.gz, .npy). - or nothing writes CSV to stdout.",
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
        help="Feature columns, by header name or 0-based index: a,b,c or 0,3,4. Default: all "
        "but the --id-column (for a trained model: its own columns, picked by name).",
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
        help="Output file (.csv, .tsv, .csv.gz, .npy) or - for stdout. Default: stdout, "
        "or nothing with --grid.",
        show_default=False,
    ),
]
GridOpt = Annotated[
    str | None,
    typer.Option(
        metavar="PNG",
        help="Also draw the rows as an image grid into this .png (needs aecli[plot]).",
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


def _read_options(
    header: bool | None,
    delimiter: str | None,
    columns: str | None,
    id_column: str | None,
    allow_nan: bool,
    model_columns: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The reader's keyword options from the shared flags."""
    delimiter = _delimiter(delimiter)
    names = None
    if columns is not None:
        names = tuple(c.strip() for c in columns.split(","))
        if not all(names):
            raise UsageError(f"empty column name in {columns!r}", flag="--columns")
    return {
        "header": header,
        "delimiter": delimiter,
        "columns": names,
        "id_column": id_column,
        "allow_nan": allow_nan,
        "model_columns": tuple(model_columns) if model_columns else None,
    }


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


def _report_dropped(dropped: int, source: str, quiet: bool = False) -> None:
    if dropped and not quiet:
        _say(f"aecli: dropped {dropped} rows of {source} with NaN, inf or missing cells")


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


# -- train -------------------------------------------------------------------------
@app.command()
def train(
    data: DataArg,
    output: Annotated[
        str,
        typer.Option("--output", "-o", help="Model file to write (.safetensors), or - for stdout."),
    ],
    kind: Annotated[Kind, typer.Option(help="Autoencoder variant.")] = Kind.basic,
    hidden: Annotated[
        str,
        typer.Option(
            help="Encoder hidden sizes, e.g. 300,150; 'none' for no hidden layer; "
            "'auto' = one layer of min(256, max(4*latent, inputs/2))."
        ),
    ] = "auto",
    latent: Annotated[
        int | None,
        typer.Option(
            help="Coding size. Default: inputs/4, between 1 and 32.", show_default=False, min=1
        ),
    ] = None,
    tied: Annotated[
        bool, typer.Option(help="Tie decoder weights to the encoder's, transposed.")
    ] = _M.tied,
    activation: Annotated[Activation, typer.Option(help="Hidden-layer activation.")] = Activation(
        _M.activation
    ),
    loss: Annotated[
        Loss, typer.Option(help="Reconstruction loss; auto = bce for vae, mse otherwise.")
    ] = Loss.auto,
    noise: Annotated[
        Noise,
        typer.Option(help="Input noise while training; auto = gaussian for denoise, else none."),
    ] = Noise.auto,
    noise_std: Annotated[
        float, typer.Option(help="Gaussian noise sigma, in scaled units.")
    ] = _M.noise_std,
    dropout: Annotated[
        float, typer.Option(help="Fraction of inputs zeroed by --noise dropout.")
    ] = _M.dropout,
    sparsity_target: Annotated[
        float, typer.Option(help="Target mean activation p (sparse).")
    ] = _M.sparsity_target,
    sparsity_weight: Annotated[
        float, typer.Option(help="Weight of sum KL(p||q) (sparse).")
    ] = _M.sparsity_weight,
    beta: Annotated[float, typer.Option(help="Weight of the latent loss (vae).")] = _M.beta,
    scale: Annotated[
        Scale,
        typer.Option(
            help="Scaling fitted on DATA; auto: [0, 1] data kept, images one range, "
            "tables robust (median, IQR, clipped at 5); 'aecli info' says which."
        ),
    ] = Scale(_T.scale),
    epochs: Annotated[int, typer.Option(help="Passes over the data.", min=1)] = _T.epochs,
    batch_size: Annotated[int, typer.Option(help="Rows per step.", min=1)] = _T.batch_size,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = _T.lr,
    weight_decay: Annotated[
        float, typer.Option(help="L2 penalty (Adam weight decay).")
    ] = _T.weight_decay,
    val_fraction: Annotated[
        float, typer.Option(help="Share of rows held out; their loss is shown each epoch.")
    ] = _T.val_fraction,
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives the same file.")
    ] = _T.seed,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = _T.device,
    precision: Annotated[
        Precision,
        typer.Option(
            help="bf16: forward pass in bfloat16 (autocast) with float32 weights, on CPUs "
            "with AVX512-BF16/AMX and CUDA GPUs; see benchmarks/precision.py."
        ),
    ] = Precision(_T.precision),
    threads: Annotated[
        int, typer.Option(help="CPU threads; 0 = chosen by problem size.", min=0)
    ] = _T.threads,
    early_stopping: Annotated[
        int,
        typer.Option(
            help="Stop when the validation loss has not improved for N epochs; keep the best "
            "weights. 0 = off.",
            min=0,
        ),
    ] = _T.early_stopping,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue training this model file (saved by Ctrl-C, a checkpoint or a "
            "finished run) up to --epochs; flags not given are taken from it.",
            show_default=False,
        ),
    ] = None,
    checkpoint_every: Annotated[
        int,
        typer.Option(
            help="Also write the model (resumable) to -o every N epochs. 0 = only at the end.",
            min=0,
        ),
    ] = _T.checkpoint_every,
    compile_model: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="torch.compile the training step: fused kernels, worth it on GPUs and long "
            "runs; the first epoch pays the compile time.",
        ),
    ] = _T.compile,
    chunk_rows: Annotated[
        int,
        typer.Option(
            help="Stream a .npy DATA in shuffled chunks of N rows instead of loading it. "
            "0 = automatic: a .npy larger than a quarter of the free memory streams.",
            min=0,
        ),
    ] = _T.chunk_rows,
    log: Annotated[
        str | None,
        typer.Option(
            help="Write one JSON line per epoch (loss terms, val_loss, seconds) to this file; "
            "draw it with 'aecli curves'.",
            show_default=False,
        ),
    ] = None,
    image_shape: Annotated[
        str | None,
        typer.Option(
            metavar="HxW",
            help="DATA's rows are images of this shape (e.g. 8x8 for a 64-column CSV): "
            "kept in the model file, and --scale auto gives every pixel one range.",
            show_default=False,
        ),
    ] = None,
    columns: ColumnsOpt = None,
    id_column: IdColumnOpt = None,
    allow_nan: AllowNanOpt = False,
    header: HeaderOpt = None,
    delimiter: DelimiterOpt = None,
    quiet: QuietOpt = False,
    *,
    ctx: typer.Context,
) -> None:
    """Train an autoencoder on DATA and write it to a model file."""
    from aecli.config import parse_hidden, resolve_config

    hidden_sizes = parse_hidden(hidden)
    train_config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        val_fraction=val_fraction,
        seed=seed,
        device=device,
        threads=threads,
        early_stopping=early_stopping,
        scale=scale.value,
        checkpoint_every=checkpoint_every,
        precision=precision.value,
        chunk_rows=chunk_rows,
        compile=compile_model,
    )
    train_config.validate()
    _check_model_output(output, data)
    if checkpoint_every and output == "-":
        raise UsageError("checkpoints need a model file, not stdout", flag="--checkpoint-every")

    from aecli import api, modelfile
    from aecli.device import check_precision, resolve_device
    from aecli.io import NpyRows, ReadStats, describe, read_table, should_stream

    check_precision(precision.value, resolve_device(device))
    resumed = None
    if resume is not None:
        resumed = modelfile.load(resume)
        given = {name for name in ctx.params if _given(ctx, name)}
        train_config = _resume_train_config(resumed, train_config, given)
        _check_resume_flags(resumed, ctx.params, given)
    stats = ReadStats()
    options = _read_options(
        header,
        delimiter,
        columns,
        id_column,
        allow_nan,
        resumed.columns if resumed is not None else None,
    )
    if should_stream(data, train_config.chunk_rows):
        npy_options = {k: options[k] for k in ("columns", "id_column", "allow_nan")}
        table: Any = NpyRows(data, **npy_options)
        stats = table.stats  # rows dropped are counted while the scaler is fitted
    else:
        table = read_table(data, stats=stats, **options)
        _report_dropped(stats.dropped, describe(data), quiet)
    if image_shape is not None:
        from aecli.pictures import parse_image_shape

        shape = parse_image_shape(image_shape)
        if shape[0] * shape[1] != table.n_features:
            raise UsageError(
                f"{image_shape} is {shape[0] * shape[1]} values, but rows have {table.n_features}",
                flag="--image-shape",
            )
        table.row_shape = shape
    scaler = None
    if resumed is not None:
        resumed.check_input(table, describe(data))
        model_config = resumed.config
    else:
        # Scaling is fitted first: on a table that auto scales robustly, a vae's
        # decoder is Gaussian (mse), as cross-entropy needs values in [0, 1].
        scaler = api.fit_scaler(table, train_config, loss == Loss.bce)
        model_config = resolve_config(
            kind.value,
            table.n_features,
            hidden=hidden_sizes,
            latent=latent,
            loss=loss.value,
            noise=noise.value,
            unit_range=scaler.vae_bce,
            tied=tied,
            activation=activation.value,
            noise_std=noise_std,
            dropout=dropout,
            sparsity_target=sparsity_target,
            sparsity_weight=sparsity_weight,
            beta=beta,
        )
        model_config.validate()
    # A run that fails must not replace a model that was there before it.
    keep_old = output != "-" and os.path.exists(output)
    checkpoint = None
    if checkpoint_every:

        def checkpoint(fitted: FittedModel) -> None:
            nonlocal keep_old
            modelfile.save(fitted, output, protect=[data])
            keep_old = False

    from aecli.trainlog import EpochLog

    with (
        _progress(train_config.epochs, quiet) as progress,
        EpochLog(log, [data, output]) as logger,
    ):

        def on_epoch(stats: EpochStats) -> None:
            logger.write(stats)
            if progress is not None:
                progress(stats)

        fitted, history = api.train(
            table,
            model_config,
            train_config,
            on_epoch,
            resume=resumed,
            checkpoint=checkpoint,
            scaler=scaler,
        )
    if isinstance(table, NpyRows):
        _report_dropped(stats.dropped, describe(data), quiet)
    target = output
    if history.stop == "non-finite" and keep_old:
        target = _beside(output, "last-finite")
    if target == "-":
        sys.stdout.buffer.write(modelfile.to_bytes(fitted))
        sys.stdout.buffer.flush()
    else:
        modelfile.save(fitted, target, protect=[data])
    where = "stdout" if target == "-" else target
    kept = fitted.summary["kept_epoch"]
    if history.stop == "non-finite":
        left = f"; {output} was left as it was" if target != output else ""
        raise TrainingError(
            f"{history.message} (the model of epoch {kept} was saved to {where}{left})"
        )
    if history.stop == "interrupted":
        _say(f"aecli: {history.message}; the model of epoch {kept} was saved to {where}")
        raise typer.Exit(130)
    if not quiet:
        if history.stop == "early-stopping":
            _say(f"aecli: {history.message}; kept epoch {kept}")
        _say(_summary_line(fitted, history.seconds, output))


# Flags that shape the model or the data split: on --resume they come from the file.
_FIXED_ON_RESUME = {
    "kind": lambda f: f.config.kind,
    "hidden": lambda f: f.config.hidden,
    "latent": lambda f: f.config.latent,
    "tied": lambda f: f.config.tied,
    "activation": lambda f: f.config.activation,
    "loss": lambda f: f.config.loss,
    "noise": lambda f: f.config.noise,
    "noise_std": lambda f: f.config.noise_std,
    "dropout": lambda f: f.config.dropout,
    "sparsity_target": lambda f: f.config.sparsity_target,
    "sparsity_weight": lambda f: f.config.sparsity_weight,
    "beta": lambda f: f.config.beta,
    "scale": lambda f: f.train_config.scale,
    "val_fraction": lambda f: f.train_config.val_fraction,
    "seed": lambda f: f.train_config.seed,
}
# Flags that may change on --resume (parameter -> TrainConfig field); unset ones keep the file's.
_RESUMABLE = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "weight_decay": "weight_decay",
    "device": "device",
    "threads": "threads",
    "early_stopping": "early_stopping",
    "checkpoint_every": "checkpoint_every",
    "precision": "precision",
    "chunk_rows": "chunk_rows",
    "compile_model": "compile",
}


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _resume_train_config(resumed: FittedModel, asked: TrainConfig, given: set[str]) -> TrainConfig:
    import dataclasses

    changes = {field: getattr(asked, field) for name, field in _RESUMABLE.items() if name in given}
    return dataclasses.replace(resumed.train_config, **changes)


def _check_resume_flags(resumed: FittedModel, params: dict[str, Any], given: set[str]) -> None:
    """A flag given with --resume must agree with the model file (repeating it is fine)."""
    from aecli.config import parse_hidden

    for name in sorted(given & _FIXED_ON_RESUME.keys()):
        value = params[name]
        value = getattr(value, "value", value)
        if value == "auto":
            continue
        if name == "hidden":
            value = tuple(parse_hidden(value) or ())
        stored = _FIXED_ON_RESUME[name](resumed)
        if value != stored:
            flag = "--" + name.replace("_", "-")
            raise UsageError(
                f"cannot change on --resume: the model file has {stored!r}, not {value!r}",
                flag=flag,
            )


def _beside(path: str, tag: str) -> str:
    """``dir/name.TAG.ext`` for ``dir/name.ext``."""
    from pathlib import Path

    target = Path(path)
    return str(target.with_name(f"{target.stem}.{tag}{target.suffix}"))


def _check_model_output(output: str, data: str) -> None:
    """Fail before training, not after, when the model could not be written."""
    from pathlib import Path

    if output == "-":
        if sys.stdout.isatty():
            raise UsageError("refusing to write a binary model file to a terminal", flag="-o")
        return
    target = Path(output)
    if target.is_dir():
        raise UsageError(f"{output!r} is a directory", flag="-o")
    if not target.parent.is_dir():
        raise UsageError(f"directory {str(target.parent)!r} does not exist", flag="-o")
    if data != "-" and target.exists() and target.resolve() == Path(data).resolve():
        raise UsageError(f"{output!r} is the input data; refusing to overwrite it", flag="-o")


def _summary_line(fitted: FittedModel, seconds: float, output: str) -> str:
    s = fitted.summary
    terms = ", ".join(f"{k} {v:.4g}" for k, v in s["final"].items())
    val = f", val loss {s['val_loss']:.4g}" if s["val_loss"] is not None else ""
    where = "stdout" if output == "-" else output
    return (
        f"trained {fitted.config.kind} {fitted.config.architecture()} on {s['rows']} rows "
        f"for {s['epochs']} epochs in {seconds:.1f} s ({s['device']}): {terms}{val} -> {where}"
    )


class _progress:
    """A rich progress bar on stderr, only when stderr is a terminal and not --quiet."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.enabled = not quiet and sys.stderr.isatty()
        self._bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("epoch"),
            MofNCompleteColumn(),
            BarColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[terms]}"),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=self.total, terms="")
        return self.update

    def update(self, stats: EpochStats) -> None:
        terms = " ".join(f"{k} {v:.4g}" for k, v in stats.terms.items())
        if stats.val_loss is not None:
            terms += f" val {stats.val_loss:.4g}"
        self._bar.update(self._task, completed=stats.epoch, terms=terms)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


# -- encode / reconstruct / sample -------------------------------------------------
@app.command()
def encode(
    model: ModelArg,
    data: DataArg,
    output: OutputOpt = "-",
    columns: ColumnsOpt = None,
    id_column: IdColumnOpt = None,
    allow_nan: AllowNanOpt = False,
    header: HeaderOpt = None,
    delimiter: DelimiterOpt = None,
) -> None:
    """Write the codes of DATA's rows (a VAE gives the posterior mean), columns z0, z1, ..."""
    options = (header, delimiter, columns, id_column, allow_nan)
    _transform(model, data, output, options, codes=True)


@app.command()
def reconstruct(
    model: ModelArg,
    data: DataArg,
    output: GridOutputOpt = None,
    grid: GridOpt = None,
    image_shape: ImageShapeOpt = None,
    show: Annotated[int, typer.Option(help="Rows drawn by --grid.", min=1)] = 20,
    columns: ColumnsOpt = None,
    id_column: IdColumnOpt = None,
    allow_nan: AllowNanOpt = False,
    header: HeaderOpt = None,
    delimiter: DelimiterOpt = None,
) -> None:
    """Write DATA's rows passed through the autoencoder, in the original units.

    With --grid, the first --show rows are drawn above their reconstructions.
    """
    options = (header, delimiter, columns, id_column, allow_nan)
    if grid is None:
        _transform(model, data, output or "-", options, codes=False)
        return
    from aecli import pictures

    pictures.check_target(grid, "--grid")

    def draw(fitted: FittedModel, first: Any) -> None:
        height, width = pictures.image_shape(first.row_shape, fitted.config.n_inputs, image_shape)
        rows = first.values[:show]
        shape = (-1, height, width)
        recon = fitted.reconstruct(rows).reshape(shape)
        pictures.save_grid(grid, pictures.pairs(rows.reshape(shape), recon), 10,
                           protect=[data, model])  # fmt: skip

    # The rows too only when -o is given; DATA is read once either way (it may be stdin).
    _transform(model, data, output, options, codes=False, on_first=draw)


def _transform(
    model_path: str,
    data: str,
    output: str | None,
    options: tuple[Any, ...],
    *,
    codes: bool,
    on_first: Callable[[FittedModel, Any], None] | None = None,
) -> None:
    """Stream DATA through the model chunk by chunk, keeping row order.

    ``on_first`` sees the first chunk before anything is written (pictures);
    ``output`` None writes no rows.
    """
    from aecli import modelfile
    from aecli.io import TableWriter

    fitted = modelfile.load(model_path)
    with _model_input(fitted, data, options) as (first, chunks):
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
        with TableWriter(
            output, columns, row_shape, protect=protect, id_name=first.id_name
        ) as writer:
            for chunk in chunks:
                writer.write(apply(chunk.values), chunk.ids)


class _model_input:
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
        reading = _read_options(*self.options, model_columns=self.fitted.columns)
        chunks = iter_table(self.data, stats=self.stats, **reading)
        first = next(chunks)
        self.fitted.check_input(first, describe(self.data))
        return first, itertools.chain([first], chunks)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        from aecli.io import describe

        if exc is None:
            _report_dropped(self.stats.dropped, describe(self.data))


def _row_shape(fitted: FittedModel, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Outputs keep the input's row shape when it has the model's width."""
    import math

    if math.prod(input_shape) == fitted.config.n_inputs:
        return input_shape
    return fitted.row_shape


@app.command()
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
    rows = fitted.sample(n, seed)
    if grid is None or output is not None:
        target = output or "-"
        with TableWriter(target, fitted.column_names, fitted.row_shape, protect=[model]) as writer:
            writer.write(rows)
    if shape is not None:
        pictures.save_grid(grid, rows.reshape(-1, *shape), 10, protect=[model])  # type: ignore[arg-type]


@app.command()
def features(
    model: ModelArg,
    grid: Annotated[str, typer.Option(help="The .png to draw into (needs aecli[plot]).")],
    image_shape: ImageShapeOpt = None,
    show: Annotated[int, typer.Option(help="How many units to draw.", min=1)] = 64,
) -> None:
    """Draw the first layer's weights, one image per unit: the patterns it responds to."""
    from aecli import modelfile, pictures

    pictures.check_target(grid, "--grid")
    fitted = modelfile.load(model)
    height, width = pictures.image_shape(fitted.row_shape, fitted.config.n_inputs, image_shape)
    weights = fitted.first_layer_weights()[:show]
    columns = min(len(weights), max(8, int(len(weights) ** 0.5)))
    pictures.save_grid(
        grid, weights.reshape(-1, height, width), columns, diverging=True, protect=[model]
    )


@app.command()
def interpolate(
    model: ModelArg,
    data: DataArg,
    rows: Annotated[
        str, typer.Option(help="Two 0-based row numbers of DATA to go between, e.g. 0,7.")
    ] = "0,1",
    steps: Annotated[int, typer.Option(help="Points from the first row to the second.", min=2)] = 8,
    output: GridOutputOpt = None,
    grid: GridOpt = None,
    image_shape: ImageShapeOpt = None,
    columns: ColumnsOpt = None,
    header: HeaderOpt = None,
    delimiter: DelimiterOpt = None,
) -> None:
    """Decode evenly spaced points on the line between two rows' codes (a latent walk)."""
    import numpy as np

    from aecli import modelfile
    from aecli.io import TableWriter, describe

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
    found: dict[int, np.ndarray] = {}
    seen = 0
    shape: tuple[int, ...] = fitted.row_shape
    with _model_input(fitted, data, (header, delimiter, columns, None, False)) as (first, chunks):
        shape = first.row_shape
        for chunk in chunks:
            for index in wanted:
                if seen <= index < seen + len(chunk.values):
                    found[index] = chunk.values[index - seen]
            seen += len(chunk.values)
            if len(found) == len(wanted):
                break
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
        height, width = pictures.image_shape(shape, fitted.config.n_inputs, image_shape)
        pictures.save_grid(grid, path.reshape(-1, height, width), steps, protect=[data, model])


# -- evaluate / score --------------------------------------------------------------
@app.command()
def evaluate(
    model: ModelArg,
    data: DataArg,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (keys: docs/evaluate.md).")
    ] = False,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Also measure a baseline on DATA: pca (same code size, fitted on the "
            "training rows at train time).",
            show_default=False,
        ),
    ] = None,
    columns: ColumnsOpt = None,
    allow_nan: AllowNanOpt = False,
    header: HeaderOpt = None,
    delimiter: DelimiterOpt = None,
) -> None:
    """Measure reconstruction on DATA: mse in original units, bce, a VAE's ELBO, sparsity."""
    from aecli import modelfile
    from aecli.diagnostics import Evaluator

    if baseline not in (None, "pca"):
        raise UsageError(
            f"unknown baseline {baseline!r}; the one baseline is pca", flag="--baseline"
        )
    fitted = modelfile.load(model)
    if baseline == "pca" and fitted.pca is None:
        raise UsageError(
            "this model file has no PCA baseline (it was written by an older aecli or has "
            "more than 4096 inputs)",
            flag="--baseline",
        )
    evaluator = Evaluator(fitted, baseline_pca=baseline == "pca")
    with _model_input(fitted, data, (header, delimiter, columns, None, allow_nan)) as (_, chunks):
        for chunk in chunks:
            evaluator.update(chunk.values)
    report = evaluator.result()
    if as_json:
        typer.echo(json.dumps(report, sort_keys=True))
        return
    typer.echo(_evaluate_text(report))


def _evaluate_text(report: dict[str, Any]) -> str:
    lines = [f"rows               {report['rows']} ({report['kind']} model)"]
    lines.append(f"mse                {report['mse']:.6g}  (per value, original units)")
    lines.append(f"mse (scaled)       {report['mse_scaled']:.6g}")
    rows = report["row_mse"]
    lines.append(
        "row mse            "
        + ", ".join(f"{k} {rows[k]:.4g}" for k in ("mean", "median", "p90", "p99", "max"))
    )
    if "bce" in report:
        lines.append(f"bce                {report['bce']:.6g}  (nats per value)")
    if "neg_elbo" in report:
        lines.append(
            f"neg ELBO           {report['neg_elbo']:.6g}  (nats per row; KL {report['kl']:.4g})"
        )
    if "mean_activation" in report:
        lines.append(
            f"mean activation    {report['mean_activation']:.4g}  (target "
            f"{report['sparsity_target']:g}; {report['units_near_target']:.0%} of units near it)"
        )
    if "pca_mse" in report:
        lines.append(
            f"PCA mse            {report['pca_mse']:.6g}  (model/PCA {report['mse_vs_pca']:.3f})"
        )
    return "\n".join(lines)


@app.command()
def score(
    model: ModelArg,
    data: DataArg,
    output: OutputOpt = "-",
    per_feature: Annotated[
        bool, typer.Option("--per-feature", help="Also write each column's squared error.")
    ] = False,
    threshold: Annotated[
        float | None,
        typer.Option(help="Add a 0/1 'anomaly' column: score above T.", show_default=False),
    ] = None,
    contamination: Annotated[
        float | None,
        typer.Option(
            help="Add a 0/1 'anomaly' column flagging scores above the (1-q) percentile of "
            "the training rows' scores.",
            show_default=False,
        ),
    ] = None,
    elbo: Annotated[
        bool,
        typer.Option(
            "--elbo", help="VAEs: score by the negative ELBO (at the posterior mean) instead."
        ),
    ] = False,
    columns: ColumnsOpt = None,
    id_column: IdColumnOpt = None,
    allow_nan: AllowNanOpt = False,
    header: HeaderOpt = None,
    delimiter: DelimiterOpt = None,
) -> None:
    """Write one anomaly score per row of DATA, in order (higher = more unusual).

    The score adds how far the row's reconstruction residual is from the
    training rows' residuals and how far its code is from their codes (squared
    Mahalanobis distances, in the model's scaled units), each divided by its
    median over the training rows (about 2 for a typical row).
    """
    from aecli import modelfile
    from aecli.diagnostics import row_terms, threshold_for
    from aecli.io import TableWriter

    if threshold is not None and not math.isfinite(threshold):
        raise UsageError(f"must be a finite number, got {threshold}", flag="--threshold")  # F26
    if threshold is not None and contamination is not None:
        raise UsageError("give --threshold or --contamination, not both", flag="--contamination")
    if contamination is not None and not 0.0 < contamination < 1.0:
        raise UsageError(f"must be between 0 and 1, got {contamination}", flag="--contamination")
    fitted = modelfile.load(model)
    key = "score" if "score" in fitted.score_quantiles else "error"
    if elbo:
        if fitted.config.kind != "vae":
            raise UsageError(
                f"needs a vae, this model is of kind {fitted.config.kind!r}", flag="--elbo"
            )
        key = "neg_elbo"
    if contamination is not None:
        if key not in fitted.score_quantiles:
            raise UsageError(
                "this model file has no training-score percentiles (written by an older aecli); "
                "use --threshold",
                flag="--contamination",
            )
        threshold = threshold_for(fitted.score_quantiles[key], contamination)
    names = ["score"] + (list(fitted.column_names) if per_feature else [])
    if threshold is not None:
        names.append("anomaly")
    field = "neg_elbo_at_mean" if elbo else "score"
    import numpy as np

    options = (header, delimiter, columns, id_column, allow_nan)
    with (
        _model_input(fitted, data, options) as (first, chunks),
        TableWriter(
            output, names, (len(names),), protect=[data, model], id_name=first.id_name
        ) as writer,
    ):
        for chunk in chunks:
            terms = row_terms(fitted, chunk.values, per_feature=per_feature)
            parts = [terms[field][:, None]]
            if per_feature:
                parts.append(terms["per_feature"])
            if threshold is not None:
                parts.append((terms[field] > threshold)[:, None].astype(np.float32))
            writer.write(np.hstack(parts), chunk.ids)


# -- info / example -----------------------------------------------------------------
@app.command()
def info(
    model: ModelArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a model file's kind, architecture, training summary and columns."""
    from aecli.config import ModelConfig
    from aecli.modelfile import read_metadata

    meta = read_metadata(model)
    config = ModelConfig.from_dict(meta["aecli.model"])
    report = {
        "file": model,
        "format": meta["format"],
        "aecli_version": meta.get("aecli.version"),
        "kind": config.kind,
        "architecture": config.architecture(),
        "model": meta["aecli.model"],
        "training": meta["aecli.train"],
        "summary": meta.get("aecli.summary", {}),
        "data": meta["aecli.data"],
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    typer.echo(_info_text(report, config))


@app.command()
def export(
    model: ModelArg,
    output: Annotated[
        str,
        typer.Option("--output", "-o", metavar="PATH", help="The .onnx file to write."),
    ],
    part: Annotated[
        str,
        typer.Option(
            "--part",
            metavar="PART",
            help="encode (codes), reconstruct (rows in original units), score (score and "
            "per-feature errors) or sample (a vae's rows from given noise).",
        ),
    ] = "encode",
) -> None:
    """Write one part of a model as an ONNX graph, its scaling inside, for serving without torch.

    The graph takes float32 rows in the original units, any number at a time,
    and gives what the matching aecli command gives. Needs the onnx extra.
    """
    from aecli import export as onnx_export
    from aecli import modelfile
    from aecli.io import write_bytes_atomic

    onnx_export.check_available()
    if part not in onnx_export.PARTS:
        raise UsageError(
            f"must be one of {', '.join(onnx_export.PARTS)}, got {part!r}", flag="--part"
        )
    _check_model_output(output, model)
    fitted = modelfile.load(model)
    onnx_export.check_part(fitted, part)
    data = onnx_export.to_onnx(fitted, part)
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_bytes_atomic(output, data, protect=[model], flag="-o")
    _say(
        f"exported {part} of {model} to {'stdout' if output == '-' else output} (ONNX opset "
        f"{onnx_export.OPSET})"
    )


def _info_text(report: dict[str, Any], config: Any) -> str:
    summary, data, train = report["summary"], report["data"], report["training"]
    final = summary.get("final", {})
    lines = [
        f"file          {report['file']} (aecli format {report['format']}, "
        f"written by aecli {report['aecli_version']})",
        f"kind          {config.kind}" + (" (tied weights)" if config.tied else ""),
        f"architecture  {config.architecture()} ({config.activation} hidden layers)",
        f"loss          {config.loss}" + _extras(config),
        f"scaling       {data.get('scale')}"
        + (f" (auto: {data['scale_reason']})" if data.get("scale_reason") else ""),
        f"trained on    {summary.get('rows', '?')} rows, {summary.get('val_rows', 0)} held out, "
        f"{summary.get('epochs', '?')} epochs, batch {train['batch_size']}, lr {train['lr']:g}, "
        f"seed {train['seed']}, {summary.get('device', '?')}",
        "final loss    " + ", ".join(f"{k} {v:.5g}" for k, v in final.items()),
    ]
    if summary.get("val_loss") is not None:
        lines.append(f"val loss      {summary['val_loss']:.5g}")
    columns = data.get("columns")
    shape = "x".join(str(s) for s in data.get("row_shape") or [])
    named = ", ".join(columns) if columns else "(no header: x0..)"
    lines.append(f"columns       {config.n_inputs} (row shape {shape}): {named}")
    return "\n".join(lines)


def _extras(config: Any) -> str:
    parts = []
    if config.noise != "none":
        amount = (
            f"std {config.noise_std:g}" if config.noise == "gaussian" else f"{config.dropout:g}"
        )
        parts.append(f"{config.noise} noise {amount}")
    if config.kind == "sparse":
        parts.append(
            f"sparsity target {config.sparsity_target:g} weight {config.sparsity_weight:g}"
        )
    if config.kind == "vae":
        parts.append(f"beta {config.beta:g}")
    return f" ({'; '.join(parts)})" if parts else ""


@app.command()
def example(
    name: Annotated[str, typer.Argument(help="Dataset name: digits.")] = "digits",
    output: OutputOpt = "-",
) -> None:
    """Write a dataset that ships with aecli (so everything works offline)."""
    from aecli import datasets
    from aecli.io import TableWriter

    table = datasets.load(name)
    columns = table.columns or [f"x{i}" for i in range(table.n_features)]
    with TableWriter(output, columns, table.row_shape) as writer:
        writer.write(table.values)


@app.command()
def curves(
    log: Annotated[str, typer.Argument(help="A log written by 'aecli train --log'.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The .png to draw into.")],
) -> None:
    """Draw training curves (loss terms and validation loss per epoch) from a --log file."""
    from aecli import pictures
    from aecli.trainlog import read_log

    pictures.check_target(output, "-o")
    pictures.save_curves(output, read_log(log), protect=[log])


# -- entry point -------------------------------------------------------------------
def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _one_line(message: str) -> str:
    """Errors are one line on stderr, whatever a library put in its message."""
    return " ".join(message.split())


def _click_classes() -> tuple[type[BaseException], type[BaseException]]:
    """Click's exception classes, wherever this typer version keeps click."""
    mro = typer.BadParameter.__mro__
    by_name = {cls.__name__: cls for cls in mro}
    return by_name["ClickException"], by_name["UsageError"]


# OpenMP threads that wait by spinning collapse when another program holds a
# core (measured 4x, up to 9x with long spins: benchmarks/threads_load.py). A
# short spin before sleeping keeps most of the idle-machine speed and bounds the
# slowdown. Set before torch loads its OpenMP runtime; a user's own choice wins.
OPENMP_DEFAULTS = {"GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "1"}


def _openmp_defaults() -> None:
    if "OMP_WAIT_POLICY" in os.environ:
        return
    for name, value in OPENMP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; expected failures become one line on stderr and an exit code."""
    _openmp_defaults()
    if not os.environ.get("AECLI_DEBUG"):
        # Libraries' warnings (file, line, source) are noise on a user's terminal;
        # aecli says what matters itself. AECLI_DEBUG=1 shows them.
        import warnings

        warnings.simplefilter("ignore")
    click_exception, click_usage_error = _click_classes()
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="aecli", standalone_mode=False)
        sys.stdout.flush()
    except AecliError as exc:
        _say(f"aecli: error: {_one_line(str(exc))}")
        return exc.exit_code
    except click_usage_error as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
            return 0
        where = ctx.command_path if ctx is not None else "aecli"
        _say(f"{where}: error: {exc.format_message()} (see '{where} --help')")  # type: ignore[attr-defined]
        return 2
    except click_exception as exc:
        _say(f"aecli: error: {exc.format_message()}")  # type: ignore[attr-defined]
        return exc.exit_code  # type: ignore[attr-defined]
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        _say("aecli: interrupted")
        return 130
    except OSError as exc:
        # A full disk, a permission problem: say which file, in one line.
        where = f"{exc.filename}: " if exc.filename else ""
        _say(f"aecli: error: {where}{exc.strerror or exc}")
        return 1
    except Exception as exc:
        # A bug in aecli. Users get one line and a way to see more; never locals.
        if os.environ.get("AECLI_DEBUG"):
            raise
        _say(
            f"aecli: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
            "(a bug; AECLI_DEBUG=1 shows the traceback)"
        )
        return 70
    return result if isinstance(result, int) else 0
