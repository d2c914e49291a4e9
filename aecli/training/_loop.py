"""The training loop: one loop for every kind, progress through a callback.

Fast by construction: the data is one tensor on the training device,
batches are index-gathered from a shuffled permutation (no DataLoader), Adam
runs fused where the device supports it, and loss terms are summed on the
device and read back once per epoch (no host sync per step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from aecli.config import TrainConfig
from aecli.fitted import OptimizerState
from aecli.models import Autoencoder
from aecli.training._average import Average
from aecli.training._distributed import BatchShare, Sync, World, all_sum_
from aecli.training._fastpath import bf16_pays
from aecli.training._optim import FusedAdam
from aecli.training._steps import TrainingStep


@dataclass
class EpochStats:
    """Mean loss terms over an epoch's training rows, and the held-out loss."""

    epoch: int
    epochs: int
    terms: dict[str, float]
    val_loss: float | None
    seconds: float
    stage: str | None = None  # --layerwise: which stage this epoch belongs to


@dataclass
class History:
    """What happened: every finished epoch, and why training stopped early if it did.

    ``stop`` is None (all epochs ran), ``"early-stopping"``, ``"interrupted"``
    (Ctrl-C) or ``"non-finite"`` (the loss became NaN or inf). In every case
    the model holds usable weights: the best ones under early stopping, else
    those of the last finished epoch; ``message`` says what happened.
    """

    epochs: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0
    stop: str | None = None
    message: str = ""
    best_epoch: int | None = None
    optimizer_state: OptimizerState | None = None

    @property
    def last(self) -> EpochStats:
        return self.epochs[-1]

    @property
    def kept(self) -> EpochStats:
        """The epoch whose weights the model holds."""
        number = self.best_epoch or self.last.epoch
        return next(e for e in self.epochs if e.epoch == number)


EpochCallback = Callable[[EpochStats], None]
WHOLE_SHUFFLE_VALUES = 256 * 2**20  # up to 1 GiB of float32 is shuffled as a whole each epoch
WIDE_ROW = 256  # rows at least this wide are gathered batch by batch
# Validation rows are scored in blocks of about this many values (4 MiB of float32 input):
# at the training batch's size, a small table's validation pass was 50-odd forwards of
# 64 rows an epoch, some 8% of its training time (cover: 75 of 920 ms).
EVAL_VALUES = 1 << 20
CheckpointCallback = Callable[[EpochStats, "OptimizerState"], None]


def make_optimizer(model: Autoencoder, config: TrainConfig) -> FusedAdam:
    """Adam, fused: one kernel for all parameters instead of a Python loop over them.

    ``config`` is sized (a run's is); an auto rate left in it is the small tables' one.
    """
    lr = config.lr or config.sized(0).lr
    return FusedAdam(model.parameters(), lr=lr, weight_decay=config.weight_decay)


def export_state(model: Autoencoder, optimizer: FusedAdam) -> OptimizerState:
    """A copy of Adam's state keyed by parameter name (stable across processes)."""
    moments: dict[str, torch.Tensor] = {}
    if optimizer.step_count == 0:
        return OptimizerState(0, moments)
    names = [name for name, _ in model.named_parameters()]
    for name, avg, avg_sq in zip(names, optimizer.exp_avg, optimizer.exp_avg_sq, strict=True):
        moments[f"{name}.exp_avg"] = avg.detach().clone()
        moments[f"{name}.exp_avg_sq"] = avg_sq.detach().clone()
    return OptimizerState(optimizer.step_count, moments)


def import_state(model: Autoencoder, optimizer: FusedAdam, saved: OptimizerState) -> None:
    """Load a saved OptimizerState into a fresh optimizer for ``model``."""
    if not saved.moments:
        return
    names = [name for name, _ in model.named_parameters()]
    optimizer.load(
        saved.step,
        [saved.moments[f"{name}.exp_avg"] for name in names],
        [saved.moments[f"{name}.exp_avg_sq"] for name in names],
    )


def epoch_seed(seed: int, epoch: int) -> int:
    """Each epoch reseeds from (seed, epoch), so a resumed run repeats an uninterrupted one."""
    return (seed * 1_000_003 + epoch) % (2**63)


def reseed(seed: int, device: torch.device) -> None:
    """Seed the generators a run draws from: the CPU's, and the GPUs' when it trains on one.

    ``torch.manual_seed`` seeds the same ones, and queues a seed for every accelerator torch
    was built for besides, recording a stack trace for each until it starts: once an epoch,
    that was 7% of a 10-column table's fit.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)


def _snapshot(
    model: Autoencoder, optimizer: FusedAdam
) -> tuple[dict[str, torch.Tensor], OptimizerState]:
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return weights, export_state(model, optimizer)


@dataclass
class Sharded:
    """This process's rows of a chunk of ``n`` rows, already in the order of the chunk's shuffle.

    Under torchrun a streamed .npy is read by each rank for its own rows only: the
    reader draws the chunk's permutation (the draw the trainer would make) and reads
    the rows of this rank's share of every batch, in batch order.
    """

    rows: torch.Tensor
    n: int


class ChunkedRows(Protocol):
    """Training rows that arrive in chunks (data larger than memory)."""

    def epoch(self, epoch: int) -> Iterator[torch.Tensor | Sharded]: ...


def _run_epoch(
    model: Autoencoder,
    optimizer: FusedAdam,
    train: torch.Tensor | ChunkedRows,
    config: TrainConfig,
    epoch: int,
    step: TrainingStep,
    sync: Sync | None = None,
) -> dict[str, float]:
    """One pass over the rows: at once, or chunk by chunk (terms weighted by rows)."""
    args = (config.batch_size, config.precision, step, sync)
    if isinstance(train, torch.Tensor):
        return _train_epoch(model, optimizer, train, *args)
    totals: dict[str, float] = {}
    rows = 0
    for chunk in train.epoch(epoch):
        count = chunk.n if isinstance(chunk, Sharded) else chunk.shape[0]
        if not count:
            continue
        terms = _train_epoch(model, optimizer, chunk, *args)
        for key, value in terms.items():
            totals[key] = totals.get(key, 0.0) + value * count
        rows += count
    return {key: value / rows for key, value in totals.items()}


def fit(
    model: Autoencoder,
    train: torch.Tensor | ChunkedRows,
    val: torch.Tensor | None,
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    *,
    start_epoch: int = 1,
    resume_state: OptimizerState | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    world: World | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> History:
    """Train ``model`` in place on scaled rows, epochs ``start_epoch..config.epochs``.

    A snapshot of the weights and of Adam's state is kept after every
    finished epoch so that a NaN loss or Ctrl-C leaves the model as it was at
    the end of the last good epoch (and resumable), and early stopping can
    return to the best one. ``on_checkpoint`` is called every
    ``config.checkpoint_every`` epochs with that snapshot.

    ``world``: the processes training together under torchrun. Each takes
    its share of every batch and their gradients are summed, so they take
    the steps one process would; ``stop_requested`` is asked at every step
    and, when any rank says yes, all stop together as at Ctrl-C. A single process asks
    it as each epoch starts (a caller's time limit, or a signal the CLI only recorded).
    """
    config = config.sized(0)  # a run's is sized; a direct call left on auto gets 64 at 3e-3
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, config)
    step = TrainingStep.choose(model, optimizer, config, world)
    if resume_state is not None:
        import_state(model, optimizer, resume_state)
    average = Average(model, config, start_epoch, resume_state)  # a finished file: its last step
    sync = Sync(world, model, stop_requested) if world is not None and world.many else None
    history = History()
    start = time.perf_counter()
    # The last good state and how many of history.epochs it includes: one tuple, stored in
    # one step, so that a signal between two statements cannot pair weights with the
    # wrong epoch (a stop would then save epoch N-1's weights as epoch N's).
    weights, state = _snapshot(model, optimizer)
    good = (weights, average.state(state), 0)
    best: tuple[float, int, tuple[Any, ...]] | None = None
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            epoch_start = time.perf_counter()
            if sync is None and stop_requested is not None and stop_requested():
                raise KeyboardInterrupt  # asked to stop, as at Ctrl-C: the epochs so far stay
            reseed(epoch_seed(config.seed, epoch), device)
            model.kl_weight = config.kl_weight(epoch)
            terms = _run_epoch(model, optimizer, train, config, epoch, step, sync)
            if not all(math.isfinite(v) for v in terms.values()):
                model.load_state_dict(good[0])
                history.stop = "non-finite"
                history.message = (
                    f"the loss became {terms['loss']} in epoch {epoch}; try a lower --lr "
                    f"(now {config.lr:g}) or --scale standard"
                )
                break
            average.add(model, epoch)
            last = average.apply(model) if epoch == config.epochs else None  # the model: its mean
            val_loss = None
            if val is not None:
                val_loss = evaluate_loss(model, val, config.batch_size, world)
            seconds = time.perf_counter() - epoch_start
            stats = EpochStats(epoch, config.epochs, terms, val_loss, seconds)
            history.epochs.append(stats)
            weights, state = _snapshot(model, optimizer)
            good = (weights, average.state(state, last), len(history.epochs))
            if on_epoch is not None:
                on_epoch(stats)
            every = config.checkpoint_every
            if on_checkpoint is not None and every and epoch % every == 0:
                on_checkpoint(stats, good[1])
            if config.early_stopping and val_loss is not None:
                if best is None or val_loss < best[0]:
                    best = (val_loss, epoch, good)
                elif epoch - best[1] >= config.early_stopping:
                    history.stop = "early-stopping"
                    history.message = (
                        f"stopped early after epoch {epoch}: no better validation loss for "
                        f"{config.early_stopping} epochs"
                    )
                    break
    except KeyboardInterrupt:
        del history.epochs[good[2] :]  # an epoch whose snapshot the signal cut short
        model.share = None
        model.load_state_dict(good[0])
        history.stop = "interrupted"
        history.message = f"interrupted during epoch {start_epoch + len(history.epochs)}"
    model.kl_weight = 1.0
    history.optimizer_state = good[1]
    if best is not None:
        model.load_state_dict(best[2][0])
        history.optimizer_state = best[2][1]
        history.best_epoch = best[1]
    history.seconds = time.perf_counter() - start
    return history


def _train_epoch(
    model: Autoencoder,
    optimizer: FusedAdam,
    data: torch.Tensor | Sharded,
    batch_size: int,
    precision: str = "fp32",
    chosen: TrainingStep | None = None,
    sync: Sync | None = None,
) -> dict[str, float]:
    """One pass over ``data`` in batches; ``chosen``: the fit's step (eager when None)."""
    model.train()
    chosen = chosen or TrainingStep.eager(model, precision)
    step, manual, graph = chosen.forward, chosen.manual, chosen.graph
    local = data.rows if isinstance(data, Sharded) else None
    device = data.rows.device if isinstance(data, Sharded) else data.device
    bf16 = precision == "bf16" and (device.type != "cpu" or bf16_pays(model, batch_size))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    if isinstance(data, Sharded):  # already this rank's rows, in shuffled order
        n, shuffled, offset = data.n, None, 0
    else:
        n = data.shape[0]
        order = torch.randperm(n, device=device)
        # Narrow rows: one gather an epoch, then each batch is a view (the same batches,
        # without a kernel call per step). Wide rows gather per step: next to their
        # matrix products the gather is cheap, and a copy of all the data is not.
        whole = data.numel() <= WHOLE_SHUFFLE_VALUES and data.shape[1] < WIDE_ROW
        shuffled = data.index_select(0, order) if whole else None
    sums: torch.Tensor | None = None
    names: list[str] = []
    for start in range(0, n, batch_size):
        lo, hi = 0, min(batch_size, n - start)
        if sync is not None:  # this process's share of the global batch
            lo, hi = sync.begin(hi)
        if local is not None:
            batch, offset = local[offset : offset + hi - lo], offset + hi - lo
        elif shuffled is not None:
            batch = shuffled[start + lo : start + hi]
        else:
            batch = data.index_select(0, order[start + lo : start + hi])  # type: ignore[union-attr]
        if graph is not None and batch.shape[0] == graph.rows:  # loss sums kept by the graph
            graph(batch)
            continue
        if manual is not None:  # gradients written by hand (aecli/training/_fastpath.py)
            loss, terms = manual(batch)
        else:
            with autocast:
                loss, terms = step(batch)
            optimizer.zero_grad(set_to_none=True)
            (loss if sync is None else loss * sync.weight).backward()
        stopping = sync is not None and sync.reduce(scaled=manual is None)
        optimizer.step()
        # Loss terms are summed on the device (read back once an epoch); a model
        # whose only term is its loss adds one number a step, not a stack.
        with torch.no_grad():
            if sums is None:
                names = ["loss", *terms]
                single = len(terms) == 1
                sums = torch.zeros(1 if single else len(names), device=device)
            rows = batch.shape[0]
            if not rows:  # a share with no rows adds nothing (its mean is NaN)
                pass
            elif single:
                sums.add_(loss, alpha=rows)
            else:
                sums.add_(torch.stack([loss, *terms.values()]), alpha=rows)
        if stopping:
            raise KeyboardInterrupt
    if graph is not None and (graphed := graph.take()):
        stacked = torch.stack(list(graphed.values()))
        sums, names = (stacked, list(graphed)) if sums is None else (stacked + sums, names)
    assert sums is not None
    if sync is not None:
        sync.end()
        all_sum_(sums)
    means = (sums / n).tolist()
    if len(means) == 1:
        means = means * len(names)
    return dict(zip(names, means))


@torch.no_grad()
def evaluate_loss(
    model: Autoencoder, data: torch.Tensor, batch_size: int, world: World | None = None
) -> float:
    """Mean loss over rows without noise (eval mode); a VAE still samples z.

    With several processes each evaluates its share of every batch and the
    sums are added, so the result is the one process's, over every row.
    """
    was_training = model.training
    model.eval()
    many = world is not None and world.many
    total = torch.zeros((), device=data.device)
    batch_size = max(batch_size, EVAL_VALUES // max(math.prod(data.shape[1:]), 1))
    for start in range(0, data.shape[0], batch_size):
        lo, hi = 0, min(batch_size, data.shape[0] - start)
        if many:
            assert world is not None
            rows = hi
            lo, hi = world.share(rows)
            model.share = BatchShare(lo, hi, rows)
        batch = data[start + lo : start + hi]
        loss, _ = model(batch)
        if batch.shape[0]:
            total = total + loss * batch.shape[0]
    model.share = None
    if many:
        all_sum_(total)
    model.train(was_training)
    return float(total) / data.shape[0]
