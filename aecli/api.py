"""The library layer the CLI calls: train a model on a table, and use it.

Everything here takes and returns numpy arrays in the user's units; scaling,
devices and torch stay inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from aecli.config import Loss, ModelConfig, TrainConfig
from aecli.device import choose_threads, resolve_device
from aecli.errors import DataError, TrainingError, UsageError
from aecli.io import Table
from aecli.models import Autoencoder, VariationalAutoencoder, build_model
from aecli.scaler import Scaler
from aecli.train import EpochCallback, History, fit

_BCE_TOLERANCE = 1e-6


@dataclass
class FittedModel:
    """A trained model with everything needed to use it on raw rows."""

    model: Autoencoder
    scaler: Scaler
    config: ModelConfig
    train_config: TrainConfig
    columns: list[str] | None
    row_shape: tuple[int, ...]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        """Input names for outputs: the header's, or x0, x1, ... when there was none."""
        return self.columns or [f"x{i}" for i in range(self.config.n_inputs)]

    @property
    def code_names(self) -> list[str]:
        return [f"z{i}" for i in range(self.config.latent)]

    def check_input(self, table: Table, source: str) -> None:
        """Refuse rows whose width or column names do not match the training data."""
        expected = self.config.n_inputs
        if table.n_features != expected:
            raise DataError(
                f"input has {table.n_features} features, the model expects {expected}",
                source=source,
            )
        if self.columns and table.columns and table.columns != self.columns:
            diff = next(i for i, (a, b) in enumerate(zip(table.columns, self.columns)) if a != b)
            raise DataError(
                f"column {diff + 1} is named {table.columns[diff]!r}, the model expects "
                f"{self.columns[diff]!r}",
                source=source,
            )

    @torch.inference_mode()
    def encode(self, values: np.ndarray) -> np.ndarray:
        """Codes (a VAE's posterior mean) for raw rows."""
        x = torch.from_numpy(self.scaler.transform(values))
        return self.model.codes(x).numpy()

    @torch.inference_mode()
    def reconstruct(self, values: np.ndarray) -> np.ndarray:
        """Reconstructions in the original units (a VAE decodes its mean)."""
        x = torch.from_numpy(self.scaler.transform(values))
        return self.scaler.inverse(self.model.reconstruct(x).numpy())

    @torch.inference_mode()
    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """n new rows decoded from the prior z ~ N(0, I); VAEs only."""
        if not isinstance(self.model, VariationalAutoencoder):
            raise UsageError(
                f"sampling needs a vae, this model is of kind {self.config.kind!r}",
                flag="MODEL",
            )
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        return self.scaler.inverse(self.model.sample(n, generator).numpy())


def train(
    table: Table,
    model_config: ModelConfig,
    train_config: TrainConfig,
    on_epoch: EpochCallback | None = None,
) -> tuple[FittedModel, History]:
    """Fit the scaler and the model; the result lives on the CPU."""
    model_config.validate()
    train_config.validate()
    device = resolve_device(train_config.device)
    scaler = Scaler.fit(table.values, train_config.scale)
    scaled = scaler.transform(table.values)
    if model_config.loss == Loss.bce.value:
        _check_unit_range(scaled, train_config.scale)
    train_rows, val_rows = split_rows(scaled, train_config.val_fraction, train_config.seed)

    torch.manual_seed(train_config.seed)
    model = build_model(model_config)
    threads = 0
    if device.type == "cpu":
        n_params = sum(p.numel() for p in model.parameters())
        threads = choose_threads(train_config.threads, n_params * train_config.batch_size)
        torch.set_num_threads(threads)
    model.to(device)
    train_x = torch.from_numpy(train_rows).to(device)
    val_x = torch.from_numpy(val_rows).to(device) if len(val_rows) else None
    history = fit(model, train_x, val_x, train_config, on_epoch)
    model.cpu().eval()
    if not history.epochs:
        if history.stop == "interrupted":
            raise KeyboardInterrupt
        raise TrainingError(f"{history.message} (no epoch finished: nothing saved)")

    kept = history.epochs[(history.best_epoch or len(history.epochs)) - 1]
    summary = {
        "rows": int(train_rows.shape[0]),
        "val_rows": int(val_rows.shape[0]),
        "epochs": len(history.epochs),
        "kept_epoch": kept.epoch,
        "stop": history.stop,
        "final": kept.terms,
        "val_loss": kept.val_loss,
        "device": device.type,
        "threads": threads,
        "torch": torch.__version__,
    }
    fitted = FittedModel(
        model, scaler, model_config, train_config, table.columns, table.row_shape, summary
    )
    return fitted, history


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
