"""``aecli train``: flags to configs, the run with its progress and log, the file."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Annotated

import typer

from aecli.cli import processes, resuming, signals
from aecli.cli.app import tell
from aecli.cli.options import (
    AllowNanOpt,
    ChoiceOf,
    ColumnsOpt,
    DataArg,
    DelimiterOpt,
    ExcludeOpt,
    HeaderOpt,
    IdColumnOpt,
    QuietOpt,
    reading_options,
    report_dropped,
)
from aecli.cli.outputs import check_outputs, write_model
from aecli.config import (
    Activation,
    Arch,
    Kind,
    Loss,
    ModelConfig,
    Noise,
    Precision,
    Scale,
    TrainConfig,
)
from aecli.sizes import DEFAULT_CHANNELS

if TYPE_CHECKING:
    from aecli.fitted import FittedModel
    from aecli.io import ReadStats
    from aecli.training import EpochStats, Result, Run

# Defaults are written once, in the config dataclasses; flags and aecli.Autoencoder read them.
_M, _T = ModelConfig(), TrainConfig()


def train(
    data: DataArg,
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="Model file to write (.safetensors), or - for stdout.",
        ),
    ],
    kind: Annotated[
        Kind, typer.Option(click_type=ChoiceOf(Kind, "--kind"), help="Autoencoder variant.")
    ] = Kind.basic,
    hidden: Annotated[
        str,
        typer.Option(
            help="Encoder hidden sizes, e.g. 300,150; 'none' for no hidden layer; "
            "'auto' = one layer of min(256, max(4*latent, inputs/2))."
        ),
    ] = "auto",
    arch: Annotated[
        Arch,
        typer.Option(
            click_type=ChoiceOf(Arch, "--arch"),
            help="mlp: dense layers (--hidden); conv: strided convolutions over image rows "
            "(--channels), for an N x H x W or N x C x H x W .npy or --image-shape.",
        ),
    ] = Arch(_M.arch),
    channels: Annotated[
        str,
        typer.Option(help="conv: channels of each stride-2 convolution (kernel 3), e.g. 32,64."),
    ] = ",".join(map(str, DEFAULT_CHANNELS)),
    latent: Annotated[
        int | None,
        typer.Option(
            help="Coding size. Default: inputs/4, between 4 and 32.", show_default=False, min=1
        ),
    ] = None,
    tied: Annotated[
        bool, typer.Option(help="Tie decoder weights to the encoder's, transposed.")
    ] = _M.tied,
    activation: Annotated[
        Activation,
        typer.Option(
            click_type=ChoiceOf(Activation, "--activation"), help="Hidden-layer activation."
        ),
    ] = Activation(_M.activation),
    loss: Annotated[
        Loss,
        typer.Option(
            click_type=ChoiceOf(Loss, "--loss"),
            help="Reconstruction loss; auto = bce for vae, mse otherwise.",
        ),
    ] = Loss.auto,
    noise: Annotated[
        Noise,
        typer.Option(
            click_type=ChoiceOf(Noise, "--noise"),
            help="Input noise while training; auto = gaussian for denoise, else none.",
        ),
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
    beta_warmup: Annotated[
        int,
        typer.Option(
            help="vae: the latent loss weight rises linearly from 0 (epoch 1) to --beta "
            "(epoch N+1), against posterior collapse; 0 = off.",
            min=0,
        ),
    ] = _T.beta_warmup,
    scale: Annotated[
        Scale,
        typer.Option(
            click_type=ChoiceOf(Scale, "--scale"),
            help="Scaling fitted on DATA; auto: [0, 1] data kept, images one range, "
            "tables robust (median, the smaller of IQR/1.349 and SD, clipped at 5); "
            "'aecli info' says which.",
        ),
    ] = Scale(_T.scale),
    epochs: Annotated[int, typer.Option(help="Passes over the data.", min=1)] = _T.epochs,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Rows per step. Default: 64, or 128 for DATA of 4096 rows or more (as fast "
            "a fit in 0.7x the time).",
            min=1,
            show_default=False,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Adam learning rate. Default: 3e-3, or 6e-3 where the default batch is 128.",
            show_default=False,
        ),
    ] = None,
    weight_decay: Annotated[
        float, typer.Option(help="L2 penalty (Adam weight decay).")
    ] = _T.weight_decay,
    val_fraction: Annotated[
        float, typer.Option(help="Share of rows held out; their loss is shown each epoch.")
    ] = _T.val_fraction,
    seed: Annotated[
        int,
        typer.Option(
            help="Random seed of the network (initial weights, batch order, noise); the same "
            "seed gives the same file. Which rows are held out does not depend on it, and a "
            "model of the default shape without --noise (up to 1,024 inputs) starts from the "
            "rows' principal components, its random weights a hundredth of their size."
        ),
    ] = _T.seed,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = _T.device,
    precision: Annotated[
        Precision,
        typer.Option(
            click_type=ChoiceOf(Precision, "--precision"),
            help="Weights stay float32. bf16: big products in bfloat16 (AVX512-BF16/AMX CPUs, "
            "CUDA GPUs); tf32: fp32 on TF32 units (CUDA, Ampere+); see benchmarks/precision.py.",
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
    layerwise: Annotated[
        bool,
        typer.Option(
            "--layerwise",
            help="Train the stack one shallow autoencoder at a time (each layer and its "
            "mirror, --epochs each, on the codes below), then fine-tune it whole.",
        ),
    ] = _T.layerwise,
    finetune_epochs: Annotated[
        int,
        typer.Option(
            help="--layerwise: epochs of the whole stack after the stages; 0 = --epochs.", min=0
        ),
    ] = _T.finetune_epochs,
    resume: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL",
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
            "runs; the first epoch pays the compile time. Needs a C++ compiler ($CXX or g++).",
        ),
    ] = _T.compile,
    chunk_rows: Annotated[
        int,
        typer.Option(
            help="Rows train in shuffled chunks of N consecutive rows; 0 = 2^24 values a "
            "chunk, at least 65536 rows. N > 0 also streams a .npy or Parquet DATA from disk, "
            "as one larger than a quarter of the free memory does: the same model either way.",
            min=0,
        ),
    ] = _T.chunk_rows,
    log: Annotated[
        str | None,
        typer.Option(
            "--log",
            "--log-file",
            metavar="PATH",
            help="Write one JSON line per epoch (loss terms, val_loss, seconds) to this file; "
            "draw it with 'aecli curves'. Under torchrun write --log-file (torchrun's own "
            "parser takes --log for its --log-dir).",
            show_default=False,
        ),
    ] = None,
    image_shape: Annotated[
        str | None,
        typer.Option(
            metavar="HxW",
            help="DATA's rows are images of this shape (e.g. 8x8 for a 64-column CSV, or "
            "CxHxW with channels): kept in the model file, and --scale auto gives every pixel "
            "one range.",
            show_default=False,
        ),
    ] = None,
    columns: ColumnsOpt = None,
    exclude: ExcludeOpt = None,
    id_column: IdColumnOpt = None,
    allow_nan: AllowNanOpt = False,
    header: HeaderOpt = None,
    delimiter: DelimiterOpt = None,
    quiet: QuietOpt = False,
    *,
    ctx: typer.Context,
) -> None:
    """Train an autoencoder on DATA and write it to a model file."""
    from aecli.cli.progress import say_ending
    from aecli.pictures import parse_image_shape
    from aecli.sizes import parse_channels, parse_hidden
    from aecli.training import ModelRequest, keep_freed_memory, prepare

    params = {
        **ctx.params,
        "hidden": parse_hidden(hidden),
        "channels": parse_channels(channels),
        "image_shape": None if image_shape is None else parse_image_shape(image_shape),
    }
    request, asked = ModelRequest.from_params(params), TrainConfig.from_params(params)
    check_outputs(output, log, data, resume, checkpoint_every)
    keep_freed_memory()  # process-wide: the command's choice, not the Python API's
    fingerprint, resume, note = resuming.pick_up(ctx.params, data, output, resume)
    run = prepare(
        data,
        request,
        asked,
        output=output,
        read_options=reading_options(
            header, delimiter, columns, id_column, allow_nan, None, exclude
        ),
        given=(n for n in ctx.params if resuming.given(ctx, n)),
        resume=None if resume is None else resuming.load(resume),
        fingerprint=fingerprint,
        join=True,
    )
    world = run.world
    processes.agree(world, ctx.params)
    if not world.main:  # under torchrun rank 0 alone writes and speaks
        quiet, log, checkpoint_every = True, None, 0
    say = tell if world.main and not quiet else lambda _: None
    if note is not None:
        say(f"aecli: {note}")
    result = _execute(run, data, output, log, resume, checkpoint_every > 0, quiet, say)
    fitted, history, target = result.fitted, result.history, result.target
    processes.finish(world)
    resumable = target != "-" and run.train_config.resumable
    auto = latent is None and run.resumed is None  # the summary says the code size was chosen
    say_ending(fitted, history, output, target, world.main, quiet, resumable, auto)


def _execute(
    run: Run,
    data: str,
    output: str,
    log: str | None,
    resume: str | None,
    checkpoints: bool,
    quiet: bool,
    say: Callable[[str], None],
) -> Result:
    """The run with its progress bar, its --log and its checkpoints; rank 0 writes the model."""
    from aecli import modelfile
    from aecli.io import describe
    from aecli.training import EpochBar, EpochLog

    world = run.world
    checkpoint = None
    if checkpoints:  # --checkpoint-every given (rank 0's: the others write nothing)

        def checkpoint(fitted: FittedModel) -> None:
            with signals.deferred():  # a signal waits until the checkpoint is whole
                modelfile.save(fitted, output, protect=[data])

    with (
        EpochBar(run.epochs_in_all(), quiet) as progress,
        EpochLog(log, [data, output, resume]) as logger,
    ):

        def on_epoch(stats: EpochStats) -> None:
            logger.write(stats)
            if progress is not None:
                progress(stats)

        def on_read(stats: ReadStats) -> None:
            report_dropped(stats.dropped, describe(data), quiet)

        _say_reading(data, say)
        with signals.polled() if world.many else nullcontext():
            result = run.execute(on_epoch, signals.requested, checkpoint, on_read)
    if result.fitted.summary.get("diverged"):
        logger.mark_diverged()
    if world.main:
        with signals.deferred():  # a second Ctrl-C waits until the file is whole (F05)
            write_model(result.fitted, result.target, data)
        if (problem := logger.save()) is not None:  # the model first, the log a warning
            tell(f"aecli: warning: --log {log}: not written ({problem}); the model was saved")
    return result


# Flags that shape the model or the data split: on --resume they come from the file.
train.sections = [  # type: ignore[attr-defined]
    ("Output", ["output", "log", "quiet"]),
    (
        "Model",
        ["kind", "arch", "hidden", "channels", "latent", "tied", "activation", "loss", "noise",
         "noise_std", "dropout", "sparsity_target", "sparsity_weight", "beta", "beta_warmup"],
    ),
    (
        "Training",
        ["epochs", "batch_size", "lr", "weight_decay", "val_fraction", "early_stopping", "seed",
         "resume", "checkpoint_every", "layerwise", "finetune_epochs"],
    ),
    (
        "Data",
        ["scale", "image_shape", "columns", "exclude", "id_column", "allow_nan", "header",
         "delimiter", "chunk_rows"],
    ),
    ("Runtime", ["device", "precision", "threads", "compile_model"]),
]  # fmt: skip


READING_NOTE_BYTES = 50 * 2**20  # a file this large takes seconds to parse: say so first


def _say_reading(data: str, say: Callable[[str], None]) -> None:
    """``aecli: reading big.csv (99 MB)...`` before a parse long enough to look like a hang."""
    import os

    if data != "-" and os.path.isfile(data) and os.path.getsize(data) >= READING_NOTE_BYTES:
        say(f"aecli: reading {data} ({os.path.getsize(data) / 2**20:.0f} MB)...")
