"""The training loop: one loop for every kind, progress through a callback.

Fast by construction: the data is one tensor on the training device,
batches are index-gathered from a shuffled permutation (no DataLoader), Adam
runs fused where the device supports it, and loss terms are summed on the
device and read back once per epoch (no host sync per step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from aecli.config import TrainConfig
from aecli.models import Autoencoder


@dataclass
class EpochStats:
    """Mean loss terms over an epoch's training rows, and the held-out loss."""

    epoch: int
    epochs: int
    terms: dict[str, float]
    val_loss: float | None
    seconds: float


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

    @property
    def last(self) -> EpochStats:
        return self.epochs[-1]


EpochCallback = Callable[[EpochStats], None]


def make_optimizer(model: Autoencoder, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam; fused (one kernel for all parameters) instead of a Python loop over them."""
    return torch.optim.Adam(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True
    )


def _snapshot(model: Autoencoder) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fit(
    model: Autoencoder,
    train: torch.Tensor,
    val: torch.Tensor | None,
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
) -> History:
    """Train ``model`` in place on scaled rows; returns the per-epoch history.

    A snapshot of the weights is kept after every finished epoch so that a
    NaN loss or Ctrl-C leaves the model as it was at the end of the last good
    epoch, and early stopping can return to the best one.
    """
    optimizer = make_optimizer(model, config)
    history = History()
    start = time.perf_counter()
    good = _snapshot(model)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    try:
        for epoch in range(1, config.epochs + 1):
            epoch_start = time.perf_counter()
            terms = _train_epoch(model, optimizer, train, config.batch_size)
            if not all(math.isfinite(v) for v in terms.values()):
                model.load_state_dict(good)
                history.stop = "non-finite"
                history.message = (
                    f"the loss became {terms['loss']} in epoch {epoch}; try a lower --lr "
                    f"(now {config.lr:g}) or --scale standard"
                )
                break
            val_loss = evaluate_loss(model, val, config.batch_size) if val is not None else None
            seconds = time.perf_counter() - epoch_start
            stats = EpochStats(epoch, config.epochs, terms, val_loss, seconds)
            history.epochs.append(stats)
            good = _snapshot(model)
            if on_epoch is not None:
                on_epoch(stats)
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
        model.load_state_dict(good)
        history.stop = "interrupted"
        history.message = f"interrupted during epoch {len(history.epochs) + 1}"
    if best is not None:
        model.load_state_dict(best[2])
        history.best_epoch = best[1]
    history.seconds = time.perf_counter() - start
    return history


def _train_epoch(
    model: Autoencoder, optimizer: torch.optim.Optimizer, data: torch.Tensor, batch_size: int
) -> dict[str, float]:
    model.train()
    n = data.shape[0]
    order = torch.randperm(n, device=data.device)
    sums: torch.Tensor | None = None
    names: list[str] = []
    for start in range(0, n, batch_size):
        batch = data.index_select(0, order[start : start + batch_size])
        loss, terms = model(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        stacked = torch.stack([loss.detach(), *(t.detach() for t in terms.values())])
        stacked = stacked * batch.shape[0]
        sums = stacked if sums is None else sums + stacked
        names = ["loss", *terms]
    assert sums is not None
    means = (sums / n).tolist()
    return dict(zip(names, means))


@torch.no_grad()
def evaluate_loss(model: Autoencoder, data: torch.Tensor, batch_size: int) -> float:
    """Mean loss over rows without noise (eval mode); a VAE still samples z."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=data.device)
    for start in range(0, data.shape[0], batch_size):
        batch = data[start : start + batch_size]
        loss, _ = model(batch)
        total = total + loss * batch.shape[0]
    model.train(was_training)
    return float(total) / data.shape[0]
