"""A trained model and everything needed to use it on raw rows: the value the library passes around.

``FittedModel`` is what training (``aecli.training``) returns, what ``modelfile`` writes and
reads, and what ``diagnostics`` measures. It sits below all three, so none of
them imports upward and there is no cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from aecli import tails
from aecli.config import ModelConfig, TrainConfig
from aecli.density import Density
from aecli.discrete import Discrete
from aecli.errors import DataError, UsageError
from aecli.io import Table
from aecli.mixture import Mixture
from aecli.models import Autoencoder, VariationalAutoencoder
from aecli.pca import PCA
from aecli.scaler import Scaler

INFER_BLOCK = 512  # rows per inference call; see FittedModel.apply
SAMPLE_BLOCK = 4096  # rows drawn at a time by sample: flat memory for any -n


@dataclass
class OptimizerState:
    """Adam's moments by parameter name, and its step count: what --resume needs.

    Here, beside the model it belongs to, because the model file stores it: the file side
    reads it without importing the training package.
    """

    step: int
    moments: dict[str, torch.Tensor]
    # The epochs in the weights' moving average (``{parameter}.average`` in moments;
    # training/_average.py); 0 where there is none.
    averaged: int = 0


@dataclass
class Blocks:
    """Scaled input split into equal blocks; ``rows`` of them are real, the rest padding."""

    tensors: list[torch.Tensor]
    rows: int


@dataclass
class CodeStats:
    """Where the training rows lie, in code and residual, for the anomaly score.

    The score adds two squared Mahalanobis distances: of the row's residual
    (scaled row minus reconstruction) from the training residuals, "is it off
    the learnt manifold, in a way the training rows are not?", and of its code
    from the training codes, "is it on the manifold, but where no training row
    is?". Together they are a Gaussian model of code and noise, the density an
    autoencoder implies. Each is divided by its median over the training rows
    so that the two count alike on any table.

    Both Gaussians are robust estimates (see ``gaussian.robust_gaussian``):
    the training rows of an anomaly detector hold anomalies, which must not
    set the profile of a normal row. Files written before the residual terms
    existed have no ``residual_*``; their first term is the scaled error
    divided by its mean, as it was then.

    Files with a ``reference`` add a third term, the distance to the nearest training row,
    and combine the three by their tails (aecli/tails.py) instead of their medians;
    files with a ``reach`` a fourth, that distance relative to the neighbours' own; files
    with a ``density`` a fifth, how rare the row is along each principal component; with a
    ``discrete`` a sixth, how rare its value is in each discrete column.
    """

    mean: np.ndarray  # float32 [latent]
    precision: np.ndarray  # float32 [latent, latent]: inverse covariance of the codes
    error_norm: float  # the first term's training scale: residual distance (or error)
    distance_norm: float  # the training scale of the codes' squared Mahalanobis distance
    residual_mean: np.ndarray | None = None  # float32 [inputs]
    residual_precision: np.ndarray | None = None  # [inputs, inputs], or [inputs] (diagonal)
    # The neighbour term (aecli/neighbours.py): scaled training rows, and each term's
    # percentiles over the training rows; files written before it have neither.
    reference: np.ndarray | None = None  # float32 [rows, inputs]
    grids: dict[str, np.ndarray] | None = None  # float32 [1001]: residual, code, neighbour
    # Each reference row's mean distance to its nearest others (the relative term); files
    # written before that term have none, and their grids no "relative".
    reach: np.ndarray | None = None  # float32 [rows]
    # The principal components' histograms (aecli/density.py); none in files before it.
    density: Density | None = None
    # The discrete columns' values (aecli/discrete.py); none in files before the term, nor
    # where no column is discrete.
    discrete: Discrete | None = None
    # The distances' units on the model's (aecli/neighbours.py ``units``): the reference rows
    # are in them. None where they are the model's, and in files before format 6.
    units: Scaler | None = None
    # Where each term starts to count, on its tail (aecli/tails.py ``FLOORS``); a term
    # without one counts whole, as every term did in files before format 8.
    floors: dict[str, float] = field(default_factory=dict)
    # The terms whose lower tail counts too, at what share of their weight (``tails.LOWER``);
    # none in files before format 9.
    lowers: dict[str, float] = field(default_factory=dict)
    # The sampled term's samples of reference rows (aecli/sampled.py), int64 [samples, rows];
    # none in files before format 10.
    samples: np.ndarray | None = None
    # A mixture of Gaussians of the training codes (aecli/mixture.py), the code's second
    # reading; none in files before format 12.
    mixture: Mixture | None = None
    # The log-span over which each term's tail grows by one past its 99th percentile
    # (``tails.span``); none in files before format 14, whose terms grow by ln(q99 / q50).
    spans: dict[str, float] = field(default_factory=dict)
    # Each column's histogram in the distances' units (aecli/density.py ``fit_columns``), the
    # density's second view; none in files before format 15.
    marginal: Density | None = None
    # The power each term's count is raised to before the weighted sum (``tails.POWER``);
    # none in files before format 16, whose terms count as they are.
    powers: dict[str, float] = field(default_factory=dict)

    def readings(self) -> tuple[dict[str, float], ...]:
        """How ``tails.parts`` reads the terms: the floors, lower tails, spans and powers."""
        return self.floors, self.lowers, self.spans, self.powers

    def distance(self, codes: np.ndarray) -> np.ndarray:
        return mahalanobis(codes, self.mean, self.precision)

    def residual_distance(self, residuals: np.ndarray) -> np.ndarray | None:
        if self.residual_mean is None or self.residual_precision is None:
            return None
        return mahalanobis(residuals, self.residual_mean, self.residual_precision)

    def parts(self) -> tuple[str, ...]:
        """The terms the score adds, in order (``score --terms``): the tails' terms where
        the file has a reference, else the first term (residual, or the error in files
        before it) and the code's distance, each over its median."""
        if self.reference is not None and self.grids is not None:
            return tuple(tails.weights(self.grids))
        has_residual = self.residual_mean is not None and self.residual_precision is not None
        return ("residual" if has_residual else "error", "code")


def mahalanobis(rows: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of each row; a 1-d precision is a diagonal one.

    In blocks of rows, so that a float64 copy of a wide table is never made whole.
    """
    rows = np.asarray(rows)
    out = np.empty(len(rows), dtype=np.float64)
    weights = precision.astype(np.float64)
    for start in range(0, len(rows), MAHALANOBIS_BLOCK):
        centred = rows[start : start + MAHALANOBIS_BLOCK].astype(np.float64) - mean
        if weights.ndim == 1:
            out[start : start + MAHALANOBIS_BLOCK] = (centred * centred) @ weights
        else:
            out[start : start + MAHALANOBIS_BLOCK] = ((centred @ weights) * centred).sum(1)
    return out


MAHALANOBIS_BLOCK = 8192


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
    optimizer_state: OptimizerState | None = None
    pca: PCA | None = None  # same code size, fitted on the training rows (original units)
    score_quantiles: dict[str, np.ndarray] = field(default_factory=dict)
    code_stats: CodeStats | None = None  # the training rows' codes, for the anomaly score
    id_column: str | None = None  # --id-column at training: carried again when a file has it

    @property
    def column_names(self) -> list[str]:
        """Input names for outputs: the header's, or x0, x1, ... when there was none."""
        return self.columns or [f"x{i}" for i in range(self.config.n_inputs)]

    @property
    def score_parts(self) -> tuple[str, ...]:
        """The terms the anomaly score adds (``CodeStats.parts``; the error alone without)."""
        return self.code_stats.parts() if self.code_stats is not None else ("error",)

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
        return self.apply(self.model.codes, values).numpy()

    @torch.inference_mode()
    def reconstruct(self, values: np.ndarray) -> np.ndarray:
        """Reconstructions in the original units (a VAE decodes its mean)."""
        return self.scaler.inverse(self.apply(self.model.reconstruct, values).numpy())

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor], values: np.ndarray) -> torch.Tensor:
        """``fn`` over the rows' fixed-size blocks (see ``blocks``), cut back to the rows."""
        blocks = self.blocks(values)
        return torch.cat([fn(block) for block in blocks.tensors])[: blocks.rows]

    def blocks(self, values: np.ndarray, *, clip: bool = True) -> Blocks:
        """Scaled rows in blocks of exactly INFER_BLOCK rows, the last one zero-padded.

        Matrix kernels round differently for different row counts, so a row's
        result would depend on how the input was chunked; with one fixed block
        shape, streaming in chunks gives bit for bit what one pass would.
        """
        x = torch.from_numpy(self.scaler.transform(values, clip=clip))
        n = x.shape[0]
        pad = -n % INFER_BLOCK
        if pad:
            x = torch.cat([x, x.new_zeros(pad, x.shape[1])])
        return Blocks(list(x.split(INFER_BLOCK)), n)

    @torch.inference_mode()
    def decode_codes(self, codes: np.ndarray) -> np.ndarray:
        """Rows in original units for codes (as ``encode`` gives them)."""
        z = torch.from_numpy(np.asarray(codes, dtype=np.float32))
        return self.scaler.inverse(self.model.output(self.model.decode(z)).numpy())

    def interpolate(self, start: np.ndarray, end: np.ndarray, steps: int) -> np.ndarray:
        """Decoded points evenly spaced on the segment between two rows' codes."""
        codes = self.encode(np.stack([start, end]))
        t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
        return self.decode_codes((1 - t) * codes[0] + t * codes[1])

    def first_layer_weights(self) -> np.ndarray:
        """The encoder's first weights: one row per unit, or a conv's kernels (out x C x k x k)."""
        return self.model.encoder[0].weight.detach().cpu().numpy()

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """n new rows decoded from the prior z ~ N(0, I); VAEs only."""
        blocks = list(self.sample_blocks(n, seed))
        if not blocks:
            return np.zeros((0, self.config.n_inputs), dtype=np.float32)
        return np.concatenate(blocks)

    def sample_blocks(self, n: int, seed: int | None = None) -> Iterator[np.ndarray]:
        """``sample`` in blocks of SAMPLE_BLOCK rows, drawn one after the other.

        Memory stays flat whatever n is, and a reader that stops early (``| head``)
        stops the drawing. The same n and seed give the same rows, block size fixed.
        A model that cannot sample is refused here, before any row is asked for.
        """
        if not isinstance(self.model, VariationalAutoencoder):
            raise UsageError(
                f"sampling needs a vae, this model is of kind '{self.config.kind}'",
                flag="MODEL",
            )
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        return self._draw(n, generator)

    @torch.inference_mode()
    def _draw(self, n: int, generator: torch.Generator) -> Iterator[np.ndarray]:
        for start in range(0, n, SAMPLE_BLOCK):
            count = min(SAMPLE_BLOCK, n - start)
            yield self.scaler.inverse(self.model.sample(count, generator).numpy())


def given_blocks(term: np.ndarray, name: str, count: int) -> tuple[torch.Tensor, ...]:
    """A term given for every row, in the rows' ``count`` blocks of INFER_BLOCK: float64 for
    the discrete one (a sum of float64 logs), float32 for the others, as they are computed."""
    typed = term.astype(np.float64 if name == "discrete" else np.float32)
    return torch.from_numpy(np.resize(typed, count * INFER_BLOCK)).split(INFER_BLOCK)
