"""The library layer the CLI calls: train a model on a table, and use it.

Everything here takes and returns numpy arrays in the user's units; scaling,
devices and torch stay inside.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from aecli import distributed
from aecli.config import Loss, ModelConfig, TrainConfig
from aecli.device import check_runtime, choose_threads, matmul_precision, resolve_device
from aecli.distributed import World, rank_device
from aecli.errors import TrainingError, UsageError
from aecli.fitted import FittedModel
from aecli.io import ON_DISK, NpyRows, ParquetRows, Table
from aecli.models import build_model
from aecli.order import (
    MIN_CHUNK_ROWS,
    SAMPLE_ROWS,
    Order,
    Source,
    TrainingRows,
    seeded_sample,
    source_of,
)
from aecli.order import fit_scaler as order_fit_scaler
from aecli.pca import PCA
from aecli.restart import STOPPED
from aecli.scaler import UNIT_TOLERANCE, Scaler
from aecli.train import (
    EpochCallback,
    EpochStats,
    History,
    OptimizerState,
    evaluate_loss,
    fit,
)


def train(
    table: Table | NpyRows | ParquetRows,
    model_config: ModelConfig,
    train_config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    *,
    resume: FittedModel | None = None,
    checkpoint: Callable[[FittedModel], None] | None = None,
    scaler: Scaler | None = None,
    world: World | None = None,
    stop_requested: Callable[[], bool] | None = None,
    run: str | None = None,
    device: torch.device | None = None,
) -> tuple[FittedModel, History]:
    """Fit the scaler and the model; the result lives on the CPU.

    With ``resume`` (a model loaded from a file) training continues after the
    epoch that model kept, with its weights, scaler and Adam state, so that
    the result equals an uninterrupted run of ``train_config.epochs``.
    ``checkpoint`` receives the model every ``checkpoint_every`` epochs.
    ``scaler``: one already fitted on ``table`` by ``fit_scaler`` (fitted here if None).
    ``world``: this process's place under torchrun, its group already joined
    (``aecli.distributed.start``); every rank passes the same table and
    configs, and only rank 0's result carries the baselines (the one it writes).
    ``run``: the fingerprint of the command (aecli/restart.py), kept in the summary of a
    checkpoint or a stopped run, so that a restart of the same command continues it.
    ``device``: the one aecli.pipeline.prepare resolved, with the configs it checked; a
    direct call (device None) has them checked and the device resolved here.
    """
    if device is None:
        model_config.validate()
        train_config.validate()
        device = resolve_device(train_config.device)
        check_runtime(train_config.precision, device, train_config.compile)
    if train_config.beta_warmup and model_config.kind != "vae":
        raise UsageError("is for --kind vae (it weighs the latent loss)", flag="--beta-warmup")
    world = world or World()
    device = rank_device(world, device)
    start_epoch = 1
    streamed = isinstance(table, ON_DISK)
    source = source_of(table)
    if resume is None:
        if scaler is None:
            scaler = order_fit_scaler(source, train_config, model_config.loss == Loss.bce.value)
    else:
        if model_config != resume.config:  # the file's config must describe its weights
            raise UsageError(
                "a resumed model keeps its own configuration; pass resume.config",
                flag="--resume",
            )
        scaler = resume.scaler
        start_epoch = int(resume.summary.get("kept_epoch", 0)) + 1
        if start_epoch > train_config.epochs and not _unfinished(resume):
            raise UsageError(
                f"the model has already trained {start_epoch - 1} epochs; "
                f"ask for more (--epochs N with N > {start_epoch - 1})",
                flag="--epochs",
            )
    if world.many:  # the same data on every rank, or the collectives would not match
        shape = {"DATA": f"{source.rows} rows of {source.n_features} values"}
        distributed.agree(world, shape, what="data")
    order = Order.of(source.rows, train_config, source.n_features)
    if model_config.loss == Loss.bce.value:
        _check_unit_range(scaler, source, train_config.scale)
    val_rows = scaler.transform(source.at(order.held_out))
    n_train = order.n_train

    torch.manual_seed(train_config.seed)
    model = build_model(model_config) if resume is None else resume.model
    threads = 0
    if device.type == "cpu":
        n_params = sum(p.numel() for p in model.parameters())
        threads = choose_threads(
            train_config.threads, n_params * train_config.batch_size, world.local_size
        )
        torch.set_num_threads(threads)
    model.to(device)
    train_x = TrainingRows(source, order, scaler, train_config, device, world, not streamed)
    val_x = torch.from_numpy(val_rows).to(device) if len(val_rows) else None
    base = {
        "rows": n_train,
        "val_rows": int(val_rows.shape[0]),
        "device": device.type,
        "threads": threads,
        "torch": torch.__version__,
        "world_size": world.size,
        "backend": world.backend,
    }

    def fitted_now(kept: EpochStats, stop: str | None, state: OptimizerState | None) -> FittedModel:
        summary = {
            **base,
            "epochs": kept.epoch if stop == "checkpoint" else None,
            "kept_epoch": kept.epoch,
            "stop": stop,
            "final": kept.terms,
            "val_loss": kept.val_loss,
        }
        if run is not None and stop in STOPPED:  # a restart of the command continues it
            summary["run"] = run
        return FittedModel(
            model, scaler, model_config, train_config, table.columns, table.row_shape,
            summary, state, id_column=getattr(table, "id_name", None),
        )  # fmt: skip

    on_checkpoint = None
    if checkpoint is not None:

        def on_checkpoint(stats: EpochStats, state: OptimizerState) -> None:
            checkpoint(fitted_now(stats, "checkpoint", state))

    started = time.perf_counter()
    with matmul_precision(train_config.precision):  # tf32: for this training only
        fit_config, fit_on_epoch = train_config, on_epoch
        if train_config.layerwise:  # one shallow autoencoder at a time, then the whole stack
            from aecli import layerwise

            layerwise.check(model, train_config, streamed, resume is not None)
            assert train_x.tensor is not None
            rows = train_x.tensor
            stage_checkpoint = None
            if checkpoint is not None:

                def stage_checkpoint(stats: EpochStats) -> None:
                    checkpoint(fitted_now(stats, "checkpoint", None))

            pretrained = layerwise.pretrain(
                model, rows, val_x, train_config, fit, on_epoch, stage_checkpoint
            )
            base["layerwise"] = {"stages": pretrained.stages}
            if pretrained.stopped is not None:  # a signal in a stage: the stack as it stands
                model.cpu().eval()
                base["layerwise"]["stopped_in"] = pretrained.stopped.last.stage
                fitted = fitted_now(pretrained.stopped.last, "interrupted", None)
                fitted.summary["epochs"] = pretrained.stopped.last.epoch
                return fitted, pretrained.stopped
            stacked = evaluate_loss(model, val_x if val_x is not None else rows, 256)
            base["layerwise"]["stacked_loss"] = stacked
            fit_config = layerwise.finetune_config(train_config)
            if on_epoch is not None:
                report = on_epoch

                def fit_on_epoch(stats: EpochStats) -> None:
                    report(replace(stats, stage=layerwise.FINETUNE))

        if resume is not None and start_epoch > train_config.epochs:  # only the statistics
            history = _trained(resume)
        else:
            history = fit(
                model,
                train_x,
                val_x,
                fit_config,
                fit_on_epoch,
                start_epoch=start_epoch,
                resume_state=resume.optimizer_state if resume is not None else None,
                on_checkpoint=on_checkpoint,
                world=world,
                stop_requested=stop_requested,
            )
    history.seconds = time.perf_counter() - started  # --layerwise: its stages too
    model.cpu().eval()
    if not history.epochs:
        if history.stop == "interrupted":
            raise KeyboardInterrupt
        raise TrainingError(f"{history.message} (no epoch finished: nothing saved)")
    fitted = fitted_now(history.kept, history.stop, history.optimizer_state)
    fitted.summary["epochs"] = history.last.epoch
    if not world.main:  # the other ranks write nothing, so need no baselines
        return fitted, history
    if (
        train_config.precision == "bf16"
        and device.type == "cpu"
        and not _any_bf16(model, fit_config)
    ):
        fitted.summary["bf16_in_fp32"] = True  # said by the summary line and info
    sample = scaler.transform(order.train_sample(source, DIVERGENCE_ROWS, train_config.seed + 1))
    baseline = mean_error(sample, model_config.loss == Loss.bce.value)
    if model_config.kind == "vae":  # its reconstruction is summed over values (and halved)
        baseline *= model_config.n_inputs * (1.0 if model_config.loss == Loss.bce.value else 0.5)
    if diverged(history, baseline):
        fitted.summary["diverged"] = True
    try:
        _add_baselines(fitted, source, order, train_config.seed)
    except KeyboardInterrupt:
        # F05: an interrupt while the baselines are computed keeps the trained
        # model; it goes without them (score falls back to the error; a --resume
        # computes them again at its end).
        fitted.pca, fitted.code_stats, fitted.score_quantiles = None, None, {}
        history.stop = fitted.summary["stop"] = "interrupted"
        if run is not None:
            fitted.summary["run"] = run
        history.message = f"interrupted after epoch {history.last.epoch}, before its statistics"
    return fitted, history


DIVERGENCE_ROWS = 10_000  # training rows that set the mean-prediction error
DIVERGED_OVER_MEAN = 2.0  # a reconstruction this many times worse than the column means
DIVERGED_OVER_FIRST = 10.0  # or a loss this many times the first epoch's


def mean_error(rows: np.ndarray, bce: bool) -> float:
    """The reconstruction error per value of predicting every row as the column means.

    Per value, as the plain models' reconstruction term is; a vae's term is per row.

    What any autoencoder must beat: the variance per value for mse, the entropy of the
    mean per value for cross-entropy.
    """
    if not len(rows):
        return float("nan")
    values = rows.astype(np.float64)
    if not bce:
        return float(values.var(0).mean())
    p = np.clip(values.mean(0), 1e-7, 1 - 1e-7)
    return float(-(p * np.log(p) + (1 - p) * np.log(1 - p)).mean())


def diverged(history: History, baseline: float) -> bool:
    """A run whose loss blew up, though it stayed finite (issue 36: --lr 100 ended at 7e6).

    Its kept reconstruction is over twice the error of predicting the column means, or its
    loss ten times the first epoch's: no learning rate that works ends either way.
    """
    final = history.kept.terms.get("reconstruction", history.kept.terms.get("loss", 0.0))
    first = history.epochs[0].terms.get("loss", float("nan"))
    return bool(
        final > DIVERGED_OVER_MEAN * baseline
        or history.kept.terms.get("loss", 0.0) > DIVERGED_OVER_FIRST * first
    )


def _any_bf16(model: torch.nn.Module, config: TrainConfig) -> bool:
    """Whether a CPU run in bf16 ran any layer in bf16: on layers this small fp32 is faster
    (aecli/fastpath.py), so the flag changed nothing, and the user should know it."""
    from aecli.fastpath import bf16_pays

    return bf16_pays(model, config.batch_size)


def _unfinished(resumed: FittedModel) -> bool:
    """A stopped run whose epochs all ran, but not the statistics that finish a model.

    A signal during the statistics (or a kill after the last checkpoint) leaves such a file;
    continuing it computes them and writes the model an uninterrupted run writes
    (findings4 #4), where asking for more epochs would be wrong.
    """
    return resumed.summary.get("stop") in STOPPED and not resumed.score_quantiles


def _trained(resumed: FittedModel) -> History:
    """The history of a run whose every epoch is already in ``resumed``."""
    summary = resumed.summary
    epoch = int(summary.get("kept_epoch", 0))
    last = EpochStats(epoch, epoch, dict(summary.get("final") or {}), summary.get("val_loss"), 0.0)
    return History([last], optimizer_state=resumed.optimizer_state)


def fit_scaler(
    table: Table | NpyRows | ParquetRows, config: TrainConfig, unit_range: bool
) -> Scaler:
    """The scaling ``config.scale`` asks for, fitted on every row of ``table``.

    ``unit_range``: the loss needs values in [0, 1] (cross-entropy), which
    ``auto`` then provides. One pass over the rows in blocks, whether they are in
    memory or on disk (aecli.order.fit_scaler), so both give the same scaler.
    """
    return order_fit_scaler(source_of(table), config, unit_range)


PCA_MAX_INPUTS = 4096  # above this the d x d covariance is not worth storing


def _add_baselines(fitted: FittedModel, source: Source, order: Order, seed: int) -> None:
    """What later commands compare against: PCA of the same code size, training scores.

    PCA over every training row in the model's scaled units, in the order's chunks (so that
    no column outweighs the others by its units); code statistics from a seeded sample of
    the training rows. The score percentiles are those of every row given (a seeded sample
    of a large table), held-out ones included: the share ``--contamination`` flags is then
    the share of the table trained on, as scikit-learn's ``contamination`` means, and the
    estimator's ``offset_`` after ``fit`` is the one ``load`` reads back.
    """
    from aecli.diagnostics import code_stats, score_quantiles

    if fitted.config.n_inputs <= PCA_MAX_INPUTS:
        k = min(fitted.config.latent, fitted.config.n_inputs)
        blocks = order.train_blocks(source)
        scaled = fitted.scaler.transform
        fitted.pca = PCA.fit_chunks(lambda: (scaled(block) for block in blocks()), k)
        fitted.pca.scaled = True
    fitted.code_stats = code_stats(fitted, order.train_sample(source, SAMPLE_ROWS, seed + 1))
    every = source.at(seeded_sample(source.rows, SAMPLE_ROWS, seed + 3))
    fitted.score_quantiles = score_quantiles(fitted, every)


def _check_unit_range(scaler: Scaler, source: Source, scale: str) -> None:
    """Cross-entropy needs every scaled value in [0, 1]: the scaled column ranges must be."""
    span = scaler.span()
    if span is None:  # a resumed model: its rows, scaled
        scaled = np.concatenate([scaler.transform(b) for b in source.scan(MIN_CHUNK_ROWS)])
        span = float(scaled.min()), float(scaled.max())
    low, high = span
    if low < -UNIT_TOLERANCE or high > 1 + UNIT_TOLERANCE:
        raise UsageError(
            f"cross-entropy needs inputs in [0, 1], but with --scale {scale} the data spans "
            f"[{low:.4g}, {high:.4g}]; use --scale minmax or --loss mse",
            flag="--loss bce",
        )
