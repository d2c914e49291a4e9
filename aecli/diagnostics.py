"""What a trained model does on data: per-row errors, ELBO terms, activations, summaries.

Used by ``evaluate`` (a summary over all rows), ``score`` (one anomaly score
per row) and by ``train``, which stores the percentiles of the training rows'
scores so that ``score --contamination q`` can turn a share into a threshold.

Units: ``error`` (the anomaly score) is the mean squared error per value in
the model's scaled units, so every column counts alike whatever its range;
``mse`` in ``evaluate`` is in the original units, to compare with PCA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aecli import losses
from aecli.config import Kind, Loss
from aecli.models import VariationalAutoencoder

if TYPE_CHECKING:
    from aecli.api import CodeStats, FittedModel

QUANTILE_GRID = np.linspace(0.0, 1.0, 1001)  # stored score percentiles, every 0.1%
ELBO_SAMPLES = 8  # Monte Carlo draws of z for evaluate's negative ELBO
NEAR_TARGET = 0.05  # a sparse unit is "near the target" within this of p


@torch.inference_mode()
def row_terms(
    fitted: FittedModel,
    values: np.ndarray,
    *,
    per_feature: bool = False,
    elbo_samples: int = 0,
    activations: bool = False,
    want_codes: bool = False,
) -> dict[str, np.ndarray]:
    """Per-row quantities for raw rows, computed in the model's fixed-size blocks.

    Always: ``error`` (scaled mse per value, against the unclipped scaled row:
    the model sees a clipped row, but an extreme value must still count as far
    off), ``mse`` (original units) and ``score`` (the anomaly score; see
    ``CodeStats``; the error alone for files written before it existed).
    ``bce`` per value for cross-entropy models. VAEs: ``kl`` and
    ``neg_elbo_at_mean`` (reconstruction at z = mu, plus KL; deterministic),
    and with ``elbo_samples`` a Monte Carlo ``neg_elbo``. ``per_feature``
    adds the scaled squared error of every value; ``activations`` the codes.
    """
    model = fitted.model
    scale = torch.from_numpy(fitted.scaler.scale)
    vae = isinstance(model, VariationalAutoencoder)
    bce = fitted.config.loss == Loss.bce.value

    stats = fitted.code_stats

    def terms(x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        codes = model.codes(x)
        decoded = model.decode(codes)
        out = model.output(decoded)
        diff = out - target
        sq = diff.square()
        error = sq.mean(1)
        result = {"error": error, "mse": (diff * scale).square().mean(1), "score": error}
        if stats is not None:
            distance = torch.from_numpy(stats.distance(codes.numpy()))
            result["distance"] = distance.float()
            result["score"] = (
                error.double() / stats.error_norm + distance / stats.distance_norm
            ).float()
        if per_feature:
            result["per_feature"] = sq
        if bce:
            result["bce"] = losses.bernoulli_nll(decoded, x) / x.shape[1]
        if vae:
            mu, gamma = model.encode(x)
            kl = losses.gaussian_kl(mu, gamma)
            result["kl"] = kl
            result["neg_elbo_at_mean"] = model.reconstruction_error(decoded, x) + kl
            if elbo_samples:
                rec = torch.zeros_like(kl)
                for _ in range(elbo_samples):
                    z = model.reparameterize(mu, gamma)
                    rec += model.reconstruction_error(model.decode(z), x)
                result["neg_elbo"] = rec / elbo_samples + kl
        if activations or want_codes:
            result["codes"] = codes
        return result

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # evaluate's ELBO draws are the same every run
        blocks = fitted.blocks(values)
        targets = fitted.blocks(values, clip=False).tensors
        parts = [terms(block, target) for block, target in zip(blocks.tensors, targets)]
    return {key: torch.cat([p[key] for p in parts])[: blocks.rows].numpy() for key in parts[0]}


def code_stats(fitted: FittedModel, values: np.ndarray) -> CodeStats:
    """Mean and inverse covariance of the rows' codes, and the scale of error and distance.

    The covariance gets a small ridge (1e-3 of its mean variance) so that a unit
    that never varies (a dead unit, a collapsed VAE dimension) cannot make it
    singular; such a unit then counts only when a row moves it.
    """
    from aecli.api import CodeStats

    terms = row_terms(fitted, values, want_codes=True)  # error and codes need no stats
    codes = terms["codes"].astype(np.float64)
    mean = codes.mean(0)
    centred = codes - mean
    cov = centred.T @ centred / max(len(codes) - 1, 1)
    ridge = 1e-3 * max(float(np.trace(cov)) / len(cov), 1e-12)
    precision = np.linalg.inv(cov + ridge * np.eye(len(cov)))
    stats = CodeStats(mean.astype(np.float32), precision.astype(np.float32), 1.0, 1.0)
    distance = stats.distance(codes)
    stats.error_norm = max(float(terms["error"].astype(np.float64).mean()), 1e-12)
    stats.distance_norm = max(float(distance.mean()), 1e-12)
    return stats


def score_quantiles(fitted: FittedModel, values: np.ndarray) -> dict[str, np.ndarray]:
    """Percentiles (0, 0.1, ..., 100) of the anomaly scores of rows (the training rows)."""
    terms = row_terms(fitted, values)
    result = {
        "error": np.quantile(terms["error"], QUANTILE_GRID).astype(np.float32),
        "score": np.quantile(terms["score"], QUANTILE_GRID).astype(np.float32),
    }
    if "neg_elbo_at_mean" in terms:
        elbo = np.quantile(terms["neg_elbo_at_mean"], QUANTILE_GRID)
        result["neg_elbo"] = elbo.astype(np.float32)
    return result


def threshold_for(quantiles: np.ndarray, contamination: float) -> float:
    """The score above which the top ``contamination`` share of training rows lie."""
    return float(np.interp(1.0 - contamination, QUANTILE_GRID, quantiles))


@dataclass
class Evaluator:
    """Accumulates ``evaluate``'s numbers chunk by chunk (memory: one float per row)."""

    fitted: FittedModel
    baseline_pca: bool = False
    rows: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    row_mse: list[np.ndarray] = field(default_factory=list)
    activation_sum: np.ndarray | None = None

    def update(self, values: np.ndarray) -> None:
        sparse = self.fitted.config.kind == Kind.sparse.value
        vae = self.fitted.config.kind == Kind.vae.value
        terms = row_terms(
            self.fitted, values, elbo_samples=ELBO_SAMPLES if vae else 0, activations=sparse
        )
        self.rows += len(values)
        self.row_mse.append(terms["mse"])
        for key in ("mse", "error", "bce", "kl", "neg_elbo"):
            if key in terms:
                self.sums[key] = self.sums.get(key, 0.0) + float(
                    terms[key].astype(np.float64).sum()
                )
        if sparse:
            total = terms["codes"].astype(np.float64).sum(0)
            self.activation_sum = (
                total if self.activation_sum is None else self.activation_sum + total
            )
        if self.baseline_pca and self.fitted.pca is not None:
            recon = self.fitted.pca.reconstruct(values)
            error = np.square(recon - values.astype(np.float64)).mean(1)
            self.sums["pca_mse"] = self.sums.get("pca_mse", 0.0) + float(error.sum())

    def result(self) -> dict[str, Any]:
        """The documented keys (see docs/evaluate.md)."""
        n = self.rows
        per_row = np.concatenate(self.row_mse).astype(np.float64)
        report: dict[str, Any] = {
            "rows": n,
            "kind": self.fitted.config.kind,
            "mse": self.sums["mse"] / n,
            "mse_scaled": self.sums["error"] / n,
            "row_mse": {
                "mean": float(per_row.mean()),
                "median": float(np.median(per_row)),
                "p90": float(np.quantile(per_row, 0.9)),
                "p99": float(np.quantile(per_row, 0.99)),
                "max": float(per_row.max()),
            },
        }
        if "bce" in self.sums:
            report["bce"] = self.sums["bce"] / n
        if "neg_elbo" in self.sums:
            report["neg_elbo"] = self.sums["neg_elbo"] / n
            report["kl"] = self.sums["kl"] / n
        if self.activation_sum is not None:
            mean_units = self.activation_sum / n
            target = self.fitted.config.sparsity_target
            report["mean_activation"] = float(mean_units.mean())
            report["sparsity_target"] = target
            report["units_near_target"] = float(np.mean(np.abs(mean_units - target) <= NEAR_TARGET))
        if "pca_mse" in self.sums:
            report["pca_mse"] = self.sums["pca_mse"] / n
            report["mse_vs_pca"] = report["mse"] / report["pca_mse"]
        return report
