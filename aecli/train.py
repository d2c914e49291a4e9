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
from aecli.errors import TrainingError
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
    epochs: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def last(self) -> EpochStats:
        return self.epochs[-1]


EpochCallback = Callable[[EpochStats], None]


def make_optimizer(model: Autoencoder, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam; fused (one kernel for all parameters) instead of a Python loop over them."""
    return torch.optim.Adam(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True
    )


def fit(
    model: Autoencoder,
    train: torch.Tensor,
    val: torch.Tensor | None,
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
) -> History:
    """Train ``model`` in place on scaled rows; returns the per-epoch history."""
    optimizer = make_optimizer(model, config)
    history = History()
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        terms = _train_epoch(model, optimizer, train, config.batch_size)
        values = {k: float(v) for k, v in terms.items()}
        if not all(math.isfinite(v) for v in values.values()):
            raise TrainingError(
                f"the loss became {values['loss']} in epoch {epoch}; try a lower --lr "
                f"(now {config.lr:g}) or --scale standard"
            )
        val_loss = evaluate_loss(model, val, config.batch_size) if val is not None else None
        stats = EpochStats(
            epoch, config.epochs, values, val_loss, time.perf_counter() - epoch_start
        )
        history.epochs.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    history.seconds = time.perf_counter() - start
    return history


def _train_epoch(
    model: Autoencoder, optimizer: torch.optim.Optimizer, data: torch.Tensor, batch_size: int
) -> dict[str, torch.Tensor]:
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
