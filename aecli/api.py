"""The library layer the CLI calls: train a model on a table, and use it.

Everything here takes and returns numpy arrays in the user's units; scaling,
devices and torch stay inside.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import torch

from aecli.config import Loss, ModelConfig, Scale, TrainConfig
from aecli.device import check_runtime, choose_threads, matmul_precision, resolve_device
from aecli.distributed import World, rank_device
from aecli.errors import TrainingError, UsageError
from aecli.fitted import FittedModel
from aecli.io import NpyRows, Table
from aecli.models import build_model
from aecli.pca import PCA
from aecli.scaler import Scaler
from aecli.train import (
    EpochCallback,
    EpochStats,
    History,
    OptimizerState,
    Sharded,
    evaluate_loss,
    fit,
)

_BCE_TOLERANCE = 1e-6


def train(
    table: Table | NpyRows,
    model_config: ModelConfig,
    train_config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    *,
    resume: FittedModel | None = None,
    checkpoint: Callable[[FittedModel], None] | None = None,
    scaler: Scaler | None = None,
    world: World | None = None,
    stop_requested: Callable[[], bool] | None = None,
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
    """
    model_config.validate()
    train_config.validate()
    if train_config.beta_warmup and model_config.kind != "vae":
        raise UsageError("is for --kind vae (it weighs the latent loss)", flag="--beta-warmup")
    world = world or World()
    device = rank_device(world, resolve_device(train_config.device))
    check_runtime(train_config.precision, device, train_config.compile)
    start_epoch = 1
    streamed = isinstance(table, NpyRows)
    if resume is None:
        if scaler is None:
            scaler = fit_scaler(table, train_config, model_config.loss == Loss.bce.value)
    else:
        if model_config != resume.config:  # the file's config must describe its weights
            raise UsageError(
                "a resumed model keeps its own configuration; pass resume.config",
                flag="--resume",
            )
        scaler = resume.scaler
        start_epoch = int(resume.summary.get("kept_epoch", 0)) + 1
        if start_epoch > train_config.epochs:
            raise UsageError(
                f"the model has already trained {start_epoch - 1} epochs; "
                f"ask for more (--epochs N with N > {start_epoch - 1})",
                flag="--epochs",
            )
    if streamed:
        if model_config.loss == Loss.bce.value and scaler.bounds is not None:  # F07
            low, high = scaler.bounds
            edges = scaler.transform(np.stack([low, high]).astype(np.float32))
            _check_unit_range(edges, train_config.scale)
        train_data, val_rows, n_train = _stream_split(table, scaler, train_config, world)
    else:
        # Split the raw rows once: the baselines below need them unscaled (a clipped
        # row does not scale back), the model needs them scaled.
        train_values, val_values = split_rows(
            table.values, train_config.val_fraction, train_config.seed
        )
        train_rows, val_rows = scaler.transform(train_values), scaler.transform(val_values)
        if model_config.loss == Loss.bce.value:
            _check_unit_range(np.concatenate([train_rows, val_rows]), train_config.scale)
        n_train = int(train_rows.shape[0])

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
    if streamed:
        train_x: torch.Tensor | StreamedRows = train_data.to(device)
    else:
        train_x = torch.from_numpy(train_rows).to(device)
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
        return FittedModel(
            model, scaler, model_config, train_config, table.columns, table.row_shape,
            summary, state,
        )  # fmt: skip

    on_checkpoint = None
    if checkpoint is not None:

        def on_checkpoint(stats: EpochStats, state: OptimizerState) -> None:
            checkpoint(fitted_now(stats, "checkpoint", state))

    with matmul_precision(train_config.precision):  # tf32: for this training only
        fit_config, fit_on_epoch = train_config, on_epoch
        if train_config.layerwise:  # one shallow autoencoder at a time, then the whole stack
            from aecli import layerwise

            layerwise.check(model, train_config, streamed, resume is not None)
            assert isinstance(train_x, torch.Tensor)
            stages = layerwise.pretrain(model, train_x, val_x, train_config, fit, on_epoch)
            stacked = evaluate_loss(model, val_x if val_x is not None else train_x, 256)
            base["layerwise"] = {"stages": stages, "stacked_loss": stacked}
            fit_config = layerwise.finetune_config(train_config)
            if on_epoch is not None:
                report = on_epoch

                def fit_on_epoch(stats: EpochStats) -> None:
                    report(replace(stats, stage=layerwise.FINETUNE))

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
    model.cpu().eval()
    if not history.epochs:
        if history.stop == "interrupted":
            raise KeyboardInterrupt
        raise TrainingError(f"{history.message} (no epoch finished: nothing saved)")
    fitted = fitted_now(history.kept, history.stop, history.optimizer_state)
    fitted.summary["epochs"] = history.last.epoch
    if not world.main:  # the other ranks write nothing, so need no baselines
        return fitted, history
    try:
        if streamed:
            _add_streamed_baselines(fitted, table, train_config)
        else:
            _add_baselines(fitted, train_values)
    except KeyboardInterrupt:
        # F05: an interrupt while the baselines are computed keeps the trained
        # model; it goes without them (score falls back to the error; a --resume
        # computes them again at its end).
        fitted.pca, fitted.code_stats, fitted.score_quantiles = None, None, {}
        history.stop = fitted.summary["stop"] = "interrupted"
        history.message = f"interrupted after epoch {history.last.epoch}, before its statistics"
    return fitted, history


def fit_scaler(table: Table | NpyRows, config: TrainConfig, unit_range: bool) -> Scaler:
    """The scaling ``config.scale`` asks for, fitted on every row of ``table``.

    ``unit_range``: the loss needs values in [0, 1] (cross-entropy), which
    ``auto`` then provides. A streamed ``.npy`` is fitted in one pass over its
    chunks (robust quantiles from a seeded sample of rows).
    """
    if not isinstance(table, NpyRows):
        return Scaler.fit(
            table.values, config.scale, row_shape=table.row_shape, unit_range=unit_range
        )
    from aecli.scaler import QUANTILE_SAMPLE_ROWS

    sample = None
    if config.scale in (Scale.auto.value, Scale.robust.value):
        n = min(table.rows, QUANTILE_SAMPLE_ROWS)
        picked = np.random.default_rng(config.seed + 2).choice(table.rows, n, replace=False)
        sample = table.take(np.sort(picked))
    chunks = table.chunks(_chunk_size(config), count_dropped=True)
    return Scaler.fit_chunks(
        chunks, config.scale, row_shape=table.row_shape, unit_range=unit_range, sample=sample
    )


PCA_MAX_INPUTS = 4096  # above this the d x d covariance is not worth storing


def _add_baselines(fitted: FittedModel, train_values: np.ndarray) -> None:
    """What later commands compare against: PCA of the same code size, training scores."""
    from aecli.diagnostics import code_stats, score_quantiles

    if fitted.config.n_inputs <= PCA_MAX_INPUTS:
        fitted.pca = PCA.fit(train_values, min(fitted.config.latent, fitted.config.n_inputs))
    fitted.code_stats = code_stats(fitted, train_values)
    fitted.score_quantiles = score_quantiles(fitted, train_values)


STREAM_CHUNK_ROWS = 65536  # default chunk when a .npy is streamed
STREAM_VAL_ROWS = 50_000  # held-out rows kept in memory when streaming
STREAM_SAMPLE_ROWS = 100_000  # training rows whose scores give the stored percentiles


def _chunk_size(config: TrainConfig) -> int:
    return config.chunk_rows or STREAM_CHUNK_ROWS


class StreamedRows:
    """Training rows of a memory-mapped .npy, served in shuffled chunks each epoch.

    The chunk order is drawn from (seed, epoch) and rows are shuffled within
    each chunk by the trainer, so memory holds one chunk however large the
    file; held-out rows are skipped.
    """

    def __init__(
        self,
        source: NpyRows,
        scaler: Scaler,
        held_out: np.ndarray,
        config: TrainConfig,
        world: World | None = None,
    ) -> None:
        self.source = source
        self.scaler = scaler
        self.held_out = held_out
        self.size = _chunk_size(config)
        self.seed = config.seed
        self.batch_size = config.batch_size
        self.world = world or World()
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> StreamedRows:
        self.device = device
        return self

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]:
        from aecli.train import epoch_seed

        n_chunks = -(-self.source.rows // self.size)
        order = np.random.default_rng(epoch_seed(self.seed, epoch)).permutation(n_chunks)
        for index in order.tolist():
            start = index * self.size
            if self.world.many:
                yield self._share(start)
                continue
            values = self.source.chunk(start, start + self.size, exclude=self.held_out)
            yield torch.from_numpy(self.scaler.transform(values)).to(self.device)

    def _share(self, start: int) -> Sharded:
        """This rank's rows of one chunk, read by position: its share of every batch.

        The chunk's permutation is drawn here, as the trainer would draw it for the
        whole chunk, so the steps are those of one process reading every row.
        """
        stop = min(start + self.size, self.source.rows)
        skip = np.union1d(self.held_out, self.source.stats.dropped_rows)
        rows = np.setdiff1d(np.arange(start, stop), skip, assume_unique=True)
        n = len(rows)
        order = torch.randperm(n, device=self.device).cpu().numpy()
        mine = []
        for first in range(0, n, self.batch_size):
            lo, hi = self.world.share(min(self.batch_size, n - first))
            mine.append(order[first + lo : first + hi])
        wanted = rows[np.concatenate(mine)] if mine else rows[:0]
        values = self.scaler.transform(self.source.rows_at(wanted))
        return Sharded(torch.from_numpy(values).to(self.device), n)


def _stream_split(
    source: NpyRows, scaler: Scaler, config: TrainConfig, world: World | None = None
) -> tuple[StreamedRows, np.ndarray, int]:
    """A seeded held-out sample (at most STREAM_VAL_ROWS rows) and the streamed rest."""
    n = source.rows
    n_val = min(round(n * config.val_fraction), n - 1, STREAM_VAL_ROWS)
    rng = np.random.default_rng(config.seed)
    held_out = np.sort(rng.choice(n, n_val, replace=False)) if n_val > 0 else np.zeros(0, int)
    val_rows = scaler.transform(source.take(held_out)) if n_val > 0 else np.zeros((0, 1))
    n_train = n - n_val - source.stats.dropped
    return StreamedRows(source, scaler, held_out, config, world), val_rows, n_train


def _add_streamed_baselines(fitted: FittedModel, source: NpyRows, config: TrainConfig) -> None:
    """PCA over all rows in chunks; code statistics and score percentiles from a seeded sample."""
    from aecli.diagnostics import code_stats, score_quantiles

    size = _chunk_size(config)
    if fitted.config.n_inputs <= PCA_MAX_INPUTS:
        k = min(fitted.config.latent, fitted.config.n_inputs)
        fitted.pca = PCA.fit_chunks(lambda: source.chunks(size), k)
    n = min(source.rows, STREAM_SAMPLE_ROWS)
    sample = np.sort(np.random.default_rng(config.seed + 1).choice(source.rows, n, replace=False))
    rows = source.take(sample)
    fitted.code_stats = code_stats(fitted, rows)
    fitted.score_quantiles = score_quantiles(fitted, rows)


def split_rows(values: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random hold-out; at least one training row is always kept."""
    n = values.shape[0]
    n_val = min(round(n * val_fraction), n - 1)
    if n_val <= 0:
        return values, values[:0]
    order = np.random.default_rng(seed).permutation(n)
    return values[order[n_val:]], values[order[:n_val]]


def _check_unit_range(scaled: np.ndarray, scale: str) -> None:
    low, high = float(scaled.min()), float(scaled.max())
    if low < -_BCE_TOLERANCE or high > 1 + _BCE_TOLERANCE:
        raise UsageError(
            f"cross-entropy needs inputs in [0, 1], but with --scale {scale} the data spans "
            f"[{low:.4g}, {high:.4g}]; use --scale minmax or --loss mse",
            flag="--loss bce",
        )
