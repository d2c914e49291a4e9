"""What a trained model does on data: per-row errors, ELBO terms, activations, summaries.

Used by ``evaluate`` (a summary over all rows), ``score`` (one anomaly score
per row) and by ``train`` (aecli/baselines.py), which stores the percentiles of the
rows' scores so that ``score --contamination q`` can turn a share into a threshold.

Units: ``error`` (the anomaly score's first term) is the mean squared error
per value in the model's scaled units against the unclipped row, so an
extreme value counts as far off; ``fit_error`` is the same against the
clipped row the model trains on, the number ``evaluate``'s ``mse_scaled``,
``Autoencoder.score`` and the training loss all measure; ``mse`` is in the
original units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aecli import losses, neighbours, tails
from aecli.config import ROWS_SEED, Kind, Loss
from aecli.gaussian import robust_gaussian
from aecli.mixture import ROWS_PER_COMPONENT, Mixture, fit_rows
from aecli.mixture import fit as fit_mixture
from aecli.models import VariationalAutoencoder

if TYPE_CHECKING:
    from aecli.fitted import CodeStats, FittedModel

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
    want_residuals: bool = False,
    known: dict[str, np.ndarray] | None = None,
    parts: bool = False,
) -> dict[str, np.ndarray]:
    """Per-row quantities for raw rows, computed in the model's fixed-size blocks.

    Always: ``error`` (scaled mse per value, against the unclipped scaled row:
    the model sees a clipped row, but an extreme value must still count as far
    off), ``fit_error`` (the same against the clipped row: what training's
    loss measures), ``mse`` (original units) and ``score`` (the anomaly score; see
    ``CodeStats``; the error alone for files written before it existed).
    ``bce`` per value for cross-entropy models. VAEs: ``kl`` and
    ``neg_elbo_at_mean`` (reconstruction at z = mu, plus KL; deterministic),
    and with ``elbo_samples`` a Monte Carlo ``neg_elbo``. ``per_feature``
    adds the scaled squared error of every value; ``activations`` the codes;
    ``want_residuals`` the scaled residuals (reconstruction minus row); ``parts`` what each
    of the score's terms adds to it, a column each in ``FittedModel.score_parts``'s order.
    With the score's statistics: ``distance`` (code) and ``residual``, and with a
    neighbour reference ``neighbour`` and ``relative`` (aecli/neighbours.py), unless
    ``known`` gives them for these rows already (training's reference rows, whose
    leave-one-out terms its statistics computed), ``density`` (aecli/density.py) and, for
    a table with discrete columns, ``discrete`` (aecli/discrete.py, from the raw values).
    """
    model = fitted.model
    scale = torch.from_numpy(fitted.scaler.scale)
    vae = isinstance(model, VariationalAutoencoder)
    bce = fitted.config.loss == Loss.bce

    stats = fitted.code_stats
    reference = reach = samples = None
    if stats is not None and stats.reference is not None:
        reference = torch.from_numpy(stats.reference)
        if stats.reach is not None:
            reach = torch.from_numpy(stats.reach)
        if stats.samples is not None:
            samples = torch.from_numpy(stats.samples)

    def terms(
        x: torch.Tensor, target: torch.Tensor, given: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        codes = model.codes(x)
        decoded = model.decode(codes)
        out = model.output(decoded)
        diff = out - target
        sq = diff.square()
        error = sq.mean(1)
        result = {
            "error": error,
            "fit_error": (out - x).square().mean(1),
            "mse": (diff * scale).square().mean(1),
            "score": error,
        }
        added = [error]  # the score's parts
        if stats is not None:
            distance = torch.from_numpy(stats.distance(codes.numpy()))
            residual = stats.residual_distance(diff.numpy())
            first = error.double() if residual is None else torch.from_numpy(residual)
            result["distance"] = distance.float()
            if residual is not None:
                result["residual"] = first.float()
            if reference is not None and stats.grids is not None:
                apart = neighbours.in_units(x, stats.units)
                if "neighbour" in given:
                    near_terms = {name: given[name] for name in NEAR_TERMS if name in given}
                elif reach is not None:
                    near_terms = neighbours.neighbour_terms(reference, apart, reach, samples)
                else:
                    near_terms = {"neighbour": neighbours.nearest(reference, apart)}
                result.update(near_terms)
                for name in ("density", "marginal"):  # the columns' histograms: format 15
                    if (histograms := getattr(stats, name)) is not None:
                        term = torch.from_numpy(histograms.term(apart.numpy())).float()
                        result[name] = near_terms[name] = term
                if "discrete" in given:
                    result["discrete"] = near_terms["discrete"] = given["discrete"].double()
                named = {"residual": first.numpy(), "code": distance.numpy()}
                if stats.mixture is not None:  # the code's second reading (format 12)
                    named["mixture"] = stats.mixture.read(codes.numpy(), apart.numpy())
                    result["mixture"] = torch.from_numpy(named["mixture"]).float()
                named.update({name: term.numpy() for name, term in near_terms.items()})
                added = list(tails.parts(named, stats.grids, *stats.readings()).values())
                result["score"] = torch.from_numpy(sum(added))
            else:
                added = [first / stats.error_norm, distance / stats.distance_norm]
                result["score"] = added[0] + added[1]
            result["score"] = result["score"].float()
        if parts:
            result["parts"] = torch.stack([torch.as_tensor(part) for part in added], 1).float()
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
        if want_residuals:
            result["residuals"] = diff
        return result

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # evaluate's ELBO draws are the same every run
        blocks = fitted.blocks(values)
        targets = fitted.blocks(values, clip=False).tensors
        from aecli.fitted import given_blocks

        known = dict(known or {})
        if stats is not None and stats.discrete is not None and stats.grids is not None:
            known.setdefault("discrete", stats.discrete.term(values))  # float64, as it comes
        cut = {name: given_blocks(term, name, len(targets)) for name, term in known.items()}
        given = [{name: part[i] for name, part in cut.items()} for i in range(len(targets))]
        parts = [terms(*args) for args in zip(blocks.tensors, targets, given)]
    return {key: torch.cat([p[key] for p in parts])[: blocks.rows].numpy() for key in parts[0]}


# The neighbour terms training computes for its reference rows (``known``), in their order.
NEAR_TERMS = ("neighbour", "sampled", "relative")
ACTIVE_UNIT_VARIANCE = 0.01  # Burda, Grosse & Salakhutdinov (2016), importance-weighted AEs
STATS_ROWS = 100_000  # training rows (a seeded sample beyond) that set the score's statistics
FULL_COVARIANCE_MAX = 1024  # wider residuals get a diagonal covariance (a d x d file cost)


def code_stats(
    fitted: FittedModel, values: np.ndarray, reference: neighbours.Reference
) -> CodeStats:
    """Robust Gaussians of the training rows' codes and residuals, and the terms' scales.

    The scales are medians over the training rows, which (as the Gaussians)
    the anomalies among them cannot move far. ``reference``: the neighbour terms'
    rows and their terms against each other (``neighbour_reference``).
    """
    from aecli.fitted import CodeStats

    if len(values) > STATS_ROWS:
        rng = np.random.default_rng(ROWS_SEED + 2)
        values = values[np.sort(rng.choice(len(values), STATS_ROWS, replace=False))]
    terms = row_terms(fitted, values, want_codes=True, want_residuals=True)
    codes_mean, codes_precision, distance = robust_gaussian(terms["codes"])
    diagonal = terms["residuals"].shape[1] > FULL_COVARIANCE_MAX
    residual_mean, residual_precision, residual = robust_gaussian(terms["residuals"], diagonal)
    apart = _apart(fitted, values, reference)
    mixture = _mixture(fitted, apart, terms["codes"], reference)
    grid = {"residual": residual, "code": distance, "mixture": mixture.read(terms["codes"], apart)}
    grid.update(reference.terms)
    grids = {name: percentiles(values.astype(np.float64)) for name, values in grid.items()}
    return CodeStats(
        codes_mean,
        codes_precision,
        max(float(np.median(residual)), 1e-12),
        max(float(np.median(distance)), 1e-12),
        residual_mean,
        residual_precision,
        reference.rows,
        grids,
        reference.reach,
        reference.density,
        reference.discrete,
        reference.units,
        dict(tails.FLOORS),
        dict(tails.LOWER),
        reference.samples,
        mixture,
        {name: float(np.float32(tails.span(g))) for name, g in grids.items()},  # as stored
        reference.marginal,
        {name: tails.POWER for name in tails.weights(grids)},
    )


def _apart(fitted: FittedModel, values: np.ndarray, reference: neighbours.Reference) -> np.ndarray:
    """Raw rows in the distances' units (aecli/neighbours.py), as ``row_terms`` reads them."""
    blocks = fitted.blocks(values)
    scaled = torch.cat(blocks.tensors)[: blocks.rows]
    return neighbours.in_units(scaled, reference.units).numpy()


def _mixture(
    fitted: FittedModel, rows: np.ndarray, codes: np.ndarray, reference: neighbours.Reference
) -> Mixture:
    """The code's second reading (aecli/mixture.py): a mixture of the rows' leading
    components, as many as the code has units (format 13) but one for each
    ``ROWS_PER_COMPONENT`` rows at most, or of the codes where the rows have no component
    (rows that do not vary).

    The bound: n rows in n - 1 or more dimensions are all at one Mahalanobis distance from
    their mean, so the training rows' terms were one number and a new row's far beyond
    it (20 rows of 300 columns: a held-out row scored 14,000), and a few more rows than
    dimensions still make a new row's distance larger than a training row's by about
    n / (n - D).
    """
    dims = min(fitted.config.latent, max(1, len(rows) // ROWS_PER_COMPONENT))
    axes = reference.density.axes[:, :dims]
    if not axes.shape[1]:
        return fit_mixture(codes, ROWS_SEED + 7)
    return fit_rows(rows, reference.density.mean, axes, ROWS_SEED + 7)


def score_quantiles(
    fitted: FittedModel, values: np.ndarray, known: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Percentiles (0, 0.1, ..., 100) of the anomaly scores of rows (the training rows)."""
    terms = row_terms(fitted, values, known=known)
    keys = {"error": "error", "score": "score", "neg_elbo": "neg_elbo_at_mean"}
    return {name: percentiles(terms[key]) for name, key in keys.items() if key in terms}


FLOAT32_MAX = float(np.finfo(np.float32).max)


def percentiles(scores: np.ndarray) -> np.ndarray:
    """The QUANTILE_GRID percentiles of scores, finite in float32 whatever the scores.

    A training row far beyond float32 (a value of 1e20 among unit values) scores inf; it
    stands at the top of the scale as float32's largest number, so the percentiles stay
    ordered and finite and such a row is still flagged (findings4 #1).
    """
    finite = np.nan_to_num(scores.astype(np.float64), nan=FLOAT32_MAX, posinf=FLOAT32_MAX)
    finite.sort()
    return np.minimum(sorted_quantiles(finite), FLOAT32_MAX).astype(np.float32)


def sorted_quantiles(ordered: np.ndarray) -> np.ndarray:
    """``np.quantile(ordered, QUANTILE_GRID)`` of sorted values, bit for bit, by numpy's own
    steps (its "linear" method: the index (n - 1) q, and its two-sided lerp), without the
    partition around 2,002 indices that numpy runs even on sorted values (6,000 rows: 0.29
    against 0.014 ms; it was 3% of fitting a dev table)."""
    if len(ordered) < 2:
        return np.quantile(ordered, QUANTILE_GRID)
    virtual = (len(ordered) - 1) * QUANTILE_GRID
    previous = np.floor(virtual)
    following = previous + 1
    top = virtual >= len(ordered) - 1  # numpy takes the last value there
    previous[top] = following[top] = -1
    low, high = ordered[previous.astype(np.intp)], ordered[following.astype(np.intp)]
    gamma = virtual - previous.astype(np.intp)
    gap = high - low
    out = low + gap * gamma
    np.subtract(high, gap * (1 - gamma), out=out, where=gamma >= 0.5)
    return out


def threshold_for(quantiles: np.ndarray, contamination: float) -> float:
    """The score above which the top ``contamination`` share of the stored percentiles lie
    (``calibrated``: the training rows', or the held-out rows' where higher)."""
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
    code_square_sum: np.ndarray | None = None

    def update(self, values: np.ndarray) -> None:
        sparse = self.fitted.config.kind == Kind.sparse
        vae = self.fitted.config.kind == Kind.vae
        terms = row_terms(
            self.fitted, values, elbo_samples=ELBO_SAMPLES if vae else 0, activations=sparse or vae
        )
        self.rows += len(values)
        self.row_mse.append(terms["mse"])
        for key in ("mse", "fit_error", "bce", "kl", "neg_elbo"):
            if key in terms:
                self.sums[key] = self.sums.get(key, 0.0) + float(
                    terms[key].astype(np.float64).sum()
                )
        if sparse or vae:
            codes = terms["codes"].astype(np.float64)
            total, squares = codes.sum(0), np.square(codes).sum(0)
            if self.activation_sum is None or self.code_square_sum is None:
                self.activation_sum, self.code_square_sum = total, squares
            else:
                self.activation_sum += total
                self.code_square_sum += squares
        if self.baseline_pca and self.fitted.pca is not None:
            self._add_pca(values)

    def _add_pca(self, values: np.ndarray) -> None:
        """PCA's errors: in the scaled units it was fitted in, and in the original units.

        In the scaled units both are measured against the clipped rows PCA and
        the model were fitted on, as ``mse_scaled`` is.
        """
        pca, raw = self.fitted.pca, values.astype(np.float64)
        assert pca is not None
        if pca.scaled:
            scaled = self.fitted.scaler.transform(values).astype(np.float64)
            recon = pca.reconstruct(scaled)
            error = np.square(recon - scaled).mean(1)
            self.sums["pca_mse_scaled"] = self.sums.get("pca_mse_scaled", 0.0) + float(error.sum())
            recon = self.fitted.scaler.inverse(recon.astype(np.float32)).astype(np.float64)
        else:  # a file from before: PCA in the original units
            recon = pca.reconstruct(raw)
        error = np.square(recon - raw).mean(1)
        self.sums["pca_mse"] = self.sums.get("pca_mse", 0.0) + float(error.sum())

    def result(self) -> dict[str, Any]:
        """The documented keys (see docs/evaluate.md)."""
        n = self.rows
        per_row = np.concatenate(self.row_mse).astype(np.float64)
        report: dict[str, Any] = {
            "rows": n,
            "kind": self.fitted.config.kind,
            "mse": self.sums["mse"] / n,
            "mse_scaled": self.sums["fit_error"] / n,
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
        vae = self.fitted.config.kind == Kind.vae
        if vae and self.activation_sum is not None and self.code_square_sum is not None:
            # Burda et al. (2016): a latent unit is active when its posterior mean varies
            # across rows, Var_x(E[z_u | x]) > 0.01; a collapsed unit ignores the input.
            mean = self.activation_sum / n
            variance = np.maximum(self.code_square_sum / n - mean**2, 0.0)
            report["active_units"] = int(np.sum(variance > ACTIVE_UNIT_VARIANCE))
            report["latent_units"] = len(variance)
        elif self.activation_sum is not None:
            mean_units = self.activation_sum / n
            target = self.fitted.config.sparsity_target
            report["mean_activation"] = float(mean_units.mean())
            report["sparsity_target"] = target
            report["units_near_target"] = float(np.mean(np.abs(mean_units - target) <= NEAR_TARGET))
        if "pca_mse_scaled" in self.sums:  # compared where neither model favours a column
            report["pca_mse"] = self.sums["pca_mse"] / n
            report["pca_mse_scaled"] = self.sums["pca_mse_scaled"] / n
            report["mse_vs_pca"] = report["mse_scaled"] / report["pca_mse_scaled"]
        elif "pca_mse" in self.sums:
            report["pca_mse"] = self.sums["pca_mse"] / n
            report["mse_vs_pca"] = report["mse"] / report["pca_mse"]
        return report
