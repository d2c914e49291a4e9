"""The steps of one training run after its rows are read: scale, build, fit, keep.

``Run.execute`` (aecli/training/_pipeline.py) calls them in that order, once; nothing
else trains. Every request check has already run in ``prepare``; what is left here needs
the rows (the scaler, the unit range of cross-entropy, the shape under torchrun).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from aecli.config import ROWS_SEED, Loss, ModelConfig, TrainConfig
from aecli.errors import DataError, TrainingError, UsageError
from aecli.fitted import FittedModel, OptimizerState
from aecli.models import Autoencoder, build_model
from aecli.scaler import UNIT_TOLERANCE, Scaler
from aecli.training._device import choose_threads, matmul_precision
from aecli.training._distributed import World, agree, rank_device
from aecli.training._divergence import diverged_run
from aecli.training._loop import EpochCallback, EpochStats, History, evaluate_loss, fit, reseed
from aecli.training._order import (
    MIN_CHUNK_ROWS,
    SAMPLE_ROWS,
    Order,
    Source,
    TrainingRows,
    fit_scaler,
    seeded_sample,
)
from aecli.training._restart import STOPPED
from aecli.training._start import (
    START_ROWS,
    Components,
    components,
    start_principal,
    starts_principal,
)


def scale(source: Source, config: TrainConfig, bce: bool, name: str) -> Scaler:
    """The scaling ``config.scale`` asks for, fitted on every row of ``source``.

    ``bce``: the loss asked for is cross-entropy, which needs values in [0, 1] (``auto``
    then provides them). One pass in blocks, in memory or on disk alike. Rows that are all
    the same are refused (``name``: the data's name for the message): an autoencoder
    learns nothing from them, and every statistic of its anomaly score would have no
    spread, so that a rounding's worth of difference would read as a huge score.
    """
    scaler = fit_scaler(source, config, bce)
    low, high = scaler.bounds or (None, None)
    if low is not None and np.array_equal(low, high):
        rows = source.rows
        said = "1 row (1 sample)" if rows == 1 else f"all {rows} rows are the same"
        raise DataError(f"{said}: an autoencoder needs rows that differ", source=name)
    return scaler


def principal(order: Order, source: Source, scaler: Scaler) -> Components:
    """The components the network's principal start reads, of a seeded sample of the scaled
    training rows: the start depends on the rows, never on ``--seed``."""
    return components(scaler.transform(order.train_sample(source, START_ROWS, ROWS_SEED + 5)))


def first_epoch(resumed: FittedModel | None, config: TrainConfig) -> int:
    """The epoch a run starts at: 1, or the one after a resumed file's kept epoch."""
    if resumed is None:
        return 1
    start = int(resumed.summary.get("kept_epoch", 0)) + 1
    if start > config.epochs and not unfinished(resumed):
        raise UsageError(
            f"the model has already trained {start - 1} epochs; "
            f"ask for more (--epochs N with N > {start - 1})",
            flag="--epochs",
        )
    return start


def unfinished(resumed: FittedModel) -> bool:
    """A stopped run whose epochs all ran, but not the statistics that finish a model.

    A signal during the statistics (or a kill after the last checkpoint) leaves such a file;
    continuing it computes them and writes the model an uninterrupted run writes
    (findings4 #4), where asking for more epochs would be wrong.
    """
    return resumed.summary.get("stop") in STOPPED and not resumed.score_quantiles


@dataclass
class Session:
    """One run's model, rows and place, from ``build`` to ``keep``.

    ``base``: the summary every file of this run carries (rows, device, threads...).
    """

    table: Any
    source: Source
    order: Order
    scaler: Scaler
    config: ModelConfig
    train_config: TrainConfig
    model: Autoencoder
    device: torch.device
    world: World
    train_rows: TrainingRows
    val_rows: torch.Tensor | None
    start_epoch: int
    resumed: FittedModel | None = None
    fingerprint: str | None = None
    base: dict[str, Any] = field(default_factory=dict)
    principal: Components | None = None  # what the network started from, where it did

    def fitted(
        self, kept: EpochStats, stop: str | None, state: OptimizerState | None
    ) -> FittedModel:
        """The model as it stands, with the summary of epoch ``kept`` and why it stopped."""
        summary = {
            **self.base,
            "epochs": kept.epoch if stop == "checkpoint" else None,
            "kept_epoch": kept.epoch,
            "stop": stop,
            "final": kept.terms,
            "val_loss": kept.val_loss,
        }
        if self.fingerprint is not None and stop in STOPPED:  # a restart continues it
            summary["run"] = self.fingerprint
        table = self.table
        return FittedModel(
            self.model, self.scaler, self.config, self.train_config, table.columns,
            table.row_shape, summary, state, id_column=getattr(table, "id_name", None),
        )  # fmt: skip


@contextlib.contextmanager
def threads_kept() -> Iterator[None]:
    """Whatever thread count a run sets (one for a small model's steps, more for its
    statistics), the process has its own back afterwards: a notebook's fit must not leave
    torch on one thread."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build(
    table: Any,
    source: Source,
    config: ModelConfig,
    scaler: Scaler,
    run: Any,
    streamed: bool,
) -> Session:
    """The split, the model on its device with its threads, and the rows it trains on.

    ``run``: the checked Run (its train config, device, world, resumed file, fingerprint).
    """
    train_config, world, resumed = run.train_config, run.world, run.resumed
    start = first_epoch(resumed, train_config)
    device = rank_device(world, run.device)
    if world.many:  # the same data on every rank, or the collectives would not match
        shape = {"DATA": f"{source.rows} rows of {source.n_features} values"}
        agree(world, shape, what="data")
    order = Order.of(source.rows, train_config, source.n_features)
    if config.loss is Loss.bce:
        _check_unit_range(scaler, source, train_config.scale)
    val = scaler.transform(source.at(order.held_out))
    reseed(train_config.seed, device)
    model = build_model(config) if resumed is None else resumed.model
    from_pca = principal(order, source, scaler) if starts_principal(config) else None
    if resumed is None and from_pca is not None:
        start_principal(model, from_pca)
    threads = 0
    if device.type == "cpu":
        n_params = sum(p.numel() for p in model.parameters())
        threads = choose_threads(
            train_config.threads, n_params * train_config.batch_size, world.local_size
        )
        torch.set_num_threads(threads)
    model.to(device)
    rows = TrainingRows(source, order, scaler, train_config, device, world, not streamed)
    base = {
        "rows": order.n_train, "val_rows": int(val.shape[0]), "device": device.type,
        "threads": threads, "torch": torch.__version__, "world_size": world.size,
        "backend": world.backend,
    }  # fmt: skip
    val_rows = torch.from_numpy(val).to(device) if len(val) else None
    return Session(
        table, source, order, scaler, config, train_config, model, device, world, rows,
        val_rows, start, resumed, run.fingerprint, base, from_pca,
    )  # fmt: skip


def train(
    session: Session,
    on_epoch: EpochCallback | None,
    checkpoint: Callable[[FittedModel], None] | None,
    should_stop: Callable[[], bool] | None,
) -> History:
    """Every epoch of the run (``--layerwise``: its stages, then the stack), timed."""
    config, resumed = session.train_config, session.resumed
    on_checkpoint = None
    if checkpoint is not None:

        def on_checkpoint(stats: EpochStats, state: OptimizerState) -> None:
            checkpoint(session.fitted(stats, "checkpoint", state))

    started = time.perf_counter()
    with matmul_precision(config.precision):  # tf32: for this training only
        fit_config, fit_on_epoch = config, on_epoch
        if config.layerwise:  # one shallow autoencoder at a time, then the whole stack
            staged = _pretrain(session, on_epoch, checkpoint, should_stop)
            if isinstance(staged, History):  # a signal in a stage: the stack as it stands
                return staged
            fit_config, fit_on_epoch = staged
        if resumed is not None and session.start_epoch > config.epochs:  # only statistics
            history = _trained(resumed)
        else:
            history = fit(
                session.model, session.train_rows, session.val_rows, fit_config, fit_on_epoch,
                start_epoch=session.start_epoch,
                resume_state=resumed.optimizer_state if resumed is not None else None,
                on_checkpoint=on_checkpoint, world=session.world, stop_requested=should_stop,
            )  # fmt: skip
    history.seconds = time.perf_counter() - started  # --layerwise: its stages too
    return history


def _pretrain(
    session: Session,
    on_epoch: EpochCallback | None,
    checkpoint: Callable[[FittedModel], None] | None,
    should_stop: Callable[[], bool] | None,
) -> History | tuple[TrainConfig, EpochCallback | None]:
    """The layer-wise stages: a stopped History, or the fine-tune's config and callback."""
    from aecli.training import _layerwise as layerwise

    rows = session.train_rows.tensor
    assert rows is not None  # prepare refused --layerwise on a streamed file
    stage_checkpoint = None
    if checkpoint is not None:

        def stage_checkpoint(stats: EpochStats) -> None:
            checkpoint(session.fitted(stats, "checkpoint", None))

    pretrained = layerwise.pretrain(
        session.model, rows, session.val_rows, session.train_config, fit, on_epoch,
        stage_checkpoint, should_stop,
    )  # fmt: skip
    session.base["layerwise"] = {"stages": pretrained.stages}
    if pretrained.stopped is not None:
        session.base["layerwise"]["stopped_in"] = pretrained.stopped.last.stage
        return pretrained.stopped
    held_out = session.val_rows if session.val_rows is not None else rows
    session.base["layerwise"]["stacked_loss"] = evaluate_loss(session.model, held_out, 256)
    fit_on_epoch = on_epoch
    if on_epoch is not None:

        def fit_on_epoch(stats: EpochStats) -> None:
            on_epoch(replace(stats, stage=layerwise.FINETUNE))

    return layerwise.finetune_config(session.train_config), fit_on_epoch


DIVERGENCE_ROWS = 10_000  # training rows that set the mean-prediction error


def keep(session: Session, history: History) -> FittedModel:
    """The model file's content: the kept epoch, whether it diverged, and its statistics.

    Only rank 0's result carries the statistics (the one it writes).
    """
    model, config = session.model, session.train_config
    model.cpu().eval()
    if not history.epochs:
        if history.stop == "interrupted":
            raise KeyboardInterrupt
        raise TrainingError(f"{history.message} (no epoch finished: nothing saved)")
    if "stopped_in" in session.base.get("layerwise", {}):  # a stage's Adam is not the model's
        fitted = session.fitted(history.last, "interrupted", None)
        fitted.summary["epochs"] = history.last.epoch
        return fitted
    fitted = session.fitted(history.kept, history.stop, history.optimizer_state)
    fitted.summary["epochs"] = history.last.epoch
    if not session.world.main:  # the other ranks write nothing, so need no statistics
        return fitted
    if config.precision == "bf16" and session.device.type == "cpu" and not _any_bf16(session):
        fitted.summary["bf16_in_fp32"] = True  # said by the summary line and info
    try:
        sample = session.order.train_sample(session.source, DIVERGENCE_ROWS, ROWS_SEED + 1)
        rows = session.scaler.transform(sample)
        config, seed = session.config, session.train_config.seed
        if diverged_run(history, rows, config, seed, session.principal):
            fitted.summary["diverged"] = True
        _add_baselines(fitted, session)
    except KeyboardInterrupt:
        # F05: an interrupt while the divergence check or the baselines are computed
        # keeps the trained model; it goes without them (score falls back to the
        # error; a --resume computes them again at its end).
        fitted.pca, fitted.code_stats, fitted.score_quantiles = None, None, {}
        history.stop = fitted.summary["stop"] = "interrupted"
        if session.fingerprint is not None:
            fitted.summary["run"] = session.fingerprint
        history.message = f"interrupted after epoch {history.last.epoch}, before its statistics"
    return fitted


def _any_bf16(session: Session) -> bool:
    """Whether a CPU run in bf16 ran any layer in bf16: on layers this small fp32 is faster
    (aecli/training/_fastpath.py), so the flag changed nothing, and the user should know it."""
    from aecli.training._fastpath import bf16_pays

    return bf16_pays(session.model, session.train_config.batch_size)


def _trained(resumed: FittedModel) -> History:
    """The history of a run whose every epoch is already in ``resumed``."""
    summary = resumed.summary
    epoch = int(summary.get("kept_epoch", 0))
    last = EpochStats(epoch, epoch, dict(summary.get("final") or {}), summary.get("val_loss"), 0.0)
    return History([last], optimizer_state=resumed.optimizer_state)


HELD_ROWS = 20_000  # held-out rows whose scores check the training rows' (calibrated)
STATS_WORK = 512 * 10_000 * 32  # multiply-adds of one block's nearest rows: a big product


def _add_baselines(fitted: FittedModel, session: Session) -> None:
    """The statistics, from the rows ``ROWS_SEED`` picks (aecli.baselines.add_baselines).

    On a CPU they run with the threads their own work calls for: training a small model
    takes one thread (its steps are too short to share), but the statistics' products
    (every row against the neighbour reference) are large.
    """
    from aecli.baselines import add_baselines
    from aecli.neighbours import neighbour_rows

    config = session.train_config
    if session.device.type == "cpu":
        torch.set_num_threads(choose_threads(config.threads, STATS_WORK, session.world.local_size))
    source, order = session.source, session.order
    code_rows = order.train_sample(source, SAMPLE_ROWS, ROWS_SEED + 1)
    score_index = seeded_sample(source.rows, SAMPLE_ROWS, ROWS_SEED + 3)
    reference_index = neighbour_rows(source.rows, source.n_features)
    reference_rows = source.at(reference_index)
    same = np.array_equal(score_index, reference_index)  # every row, on tables up to 10,000
    score_rows = reference_rows if same else source.at(score_index)
    held_index = order.held_out[seeded_sample(len(order.held_out), HELD_ROWS, ROWS_SEED + 6)]
    held_in_reference = np.isin(reference_index, order.held_out)
    blocks = order.train_blocks(source)
    rows = code_rows, score_rows, reference_rows, source.at(held_index), held_in_reference
    add_baselines(fitted, blocks, *rows)


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
