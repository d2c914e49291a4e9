"""evaluate, score, pictures and training logs: numbers checked against formulas."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aecli import modelfile, tails
from aecli.diagnostics import QUANTILE_GRID, row_terms, threshold_for
from aecli.io import read_table
from aecli.pca import PCA
from tests.conftest import FAST, invoke


def test_evaluate_mse_and_pca_match_their_definitions(basic_model: Path, digits_csv: Path) -> None:
    result = invoke(["evaluate", basic_model, digits_csv, "--json", "--baseline", "pca"])
    assert result.code == 0, result.stderr
    report = json.loads(result.text)
    fitted = modelfile.load(str(basic_model))
    data = read_table(str(digits_csv)).values
    assert report["rows"] == len(data)
    expected = np.mean((fitted.reconstruct(data).astype(np.float64) - data) ** 2)
    assert report["mse"] == pytest.approx(expected, rel=1e-5)
    assert report["row_mse"]["max"] >= report["row_mse"]["p99"] >= report["row_mse"]["median"]
    # The stored PCA is the one of the training rows (the 90% not held out), same code size,
    # fitted in the model's scaled units and compared there (issue 30).
    assert fitted.pca is not None and fitted.pca.components.shape == (8, 64) and fitted.pca.scaled
    scaled = fitted.scaler.transform(data).astype(np.float64)
    recon = fitted.pca.reconstruct(scaled)
    assert report["pca_mse_scaled"] == pytest.approx(np.mean((recon - scaled) ** 2), rel=1e-5)
    original = fitted.scaler.inverse(recon.astype(np.float32)).astype(np.float64)
    assert report["pca_mse"] == pytest.approx(np.mean((original - data) ** 2), rel=1e-5)
    assert report["mse_vs_pca"] == pytest.approx(report["mse_scaled"] / report["pca_mse_scaled"])


def test_pca_on_a_mixed_scale_table_is_compared_where_no_column_dominates(
    tmp_path: Path,
) -> None:
    """Issue 30: incomes next to ratios gave 'model/PCA 130076705' (PCA in original units)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3)) @ rng.normal(size=(3, 7)) + 0.1 * rng.normal(size=(2000, 7))
    x = x * np.array([1e5, 1, 0.01, 30, 1, 1e3, 5]) + np.array([5e5, 0, 0, 40, 0, 0, 0])
    data = tmp_path / "mixed.csv"
    np.savetxt(data, x, delimiter=",", header="income,a,b,age,c,d,e", comments="", fmt="%.6g")
    model = tmp_path / "m.safetensors"
    assert invoke(["train", data, "-o", model, "--latent", "3", "-q"]).code == 0
    report = json.loads(invoke(["evaluate", model, data, "--json", "--baseline", "pca"]).text)
    assert 0.5 < report["mse_vs_pca"] < 2, report  # a model near PCA's quality: near 1


def test_scaled_error_is_what_training_measured_on_a_heavy_tailed_table(tmp_path: Path) -> None:
    """Issue 36: robust scaling clips at 5 spreads; evaluate measured the unclipped rows.

    On cardio (interquartile spreads of 0.04 beside unit deviations) evaluate said 46.97
    in scaled units against a validation loss of 0.20, and model/PCA 158 where the model
    beats PCA. Here: columns whose middle half is narrow and whose tails reach 100s of
    spreads, so that many values are clipped.
    """
    from aecli import Autoencoder

    rng = np.random.default_rng(0)
    base = rng.normal(size=(1500, 2)) @ rng.normal(size=(2, 8))
    tails = rng.standard_t(1, size=(1500, 8)) * (rng.random((1500, 8)) < 0.1)
    x = np.where(rng.random((1500, 8)) < 0.5, 0.01 * base, base) + tails
    data = tmp_path / "heavy.npy"
    np.save(data, x.astype(np.float32))
    model = tmp_path / "m.safetensors"
    assert invoke(["train", data, "-o", model, "--seed", "0", "-q"]).code == 0
    fitted = modelfile.load(str(model))
    assert fitted.scaler.clip is not None  # robust scaling, clipped
    scaled = fitted.scaler.transform(x.astype(np.float32), clip=False)
    assert (np.abs(scaled) > fitted.scaler.clip).mean() > 0.02  # values beyond the clip
    report = json.loads(invoke(["evaluate", model, data, "--json", "--baseline", "pca"]).text)
    val_loss = fitted.summary["val_loss"]
    assert val_loss / 2 < report["mse_scaled"] < val_loss * 2, (report, val_loss)
    clipped = fitted.scaler.transform(x.astype(np.float32)).astype(np.float64)
    pca_error = np.mean((fitted.pca.reconstruct(clipped) - clipped) ** 2)
    assert report["pca_mse_scaled"] == pytest.approx(pca_error, rel=1e-5)
    assert report["mse_vs_pca"] < 1.5  # measured alike, the model is near PCA or better
    assert Autoencoder.load(model).score(x) == pytest.approx(-report["mse_scaled"], rel=1e-6)


def test_a_file_whose_pca_is_in_original_units_compares_there() -> None:
    """Files from before keep their meaning: mse / pca_mse, both in the original units."""
    golden = Path(__file__).parent / "data"
    model, rows = golden / "format1-basic.safetensors", golden / "format1-rows.csv"
    fitted = modelfile.load(str(model))
    assert fitted.pca is not None and not fitted.pca.scaled
    report = json.loads(invoke(["evaluate", model, rows, "--json", "--baseline", "pca"]).text)
    data = read_table(str(rows)).values.astype(np.float64)
    assert report["pca_mse"] == pytest.approx(np.mean((fitted.pca.reconstruct(data) - data) ** 2))
    assert "pca_mse_scaled" not in report
    assert report["mse_vs_pca"] == pytest.approx(report["mse"] / report["pca_mse"])


def test_pca_fit_is_the_best_rank_k_reconstruction() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6)) + 3
    pca = PCA.fit(data, 2)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(2), atol=1e-10)
    centred = data - data.mean(0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    best = (u[:, :2] * s[:2]) @ vt[:2] + data.mean(0)
    np.testing.assert_allclose(pca.reconstruct(data), best, atol=1e-8)


def test_vae_terms_follow_the_elbo_formula(vae_model: Path, digits: np.ndarray) -> None:
    fitted = modelfile.load(str(vae_model))
    rows = digits[:5]
    terms = row_terms(fitted, rows)
    x = torch.from_numpy(fitted.scaler.transform(rows))
    with torch.no_grad():
        mu, gamma = fitted.model.encode(x)
        kl = 0.5 * (gamma.exp() + mu**2 - 1 - gamma).sum(1)
        logits = fitted.model.decode(mu)
        nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
    np.testing.assert_allclose(terms["kl"], kl.numpy(), rtol=1e-5)
    np.testing.assert_allclose(terms["neg_elbo_at_mean"], (nll.sum(1) + kl).numpy(), rtol=1e-5)
    np.testing.assert_allclose(terms["bce"], nll.mean(1).numpy(), rtol=1e-5)


def test_evaluate_vae_and_sparse_keys(tmp_path: Path, vae_model: Path, digits_csv: Path) -> None:
    vae = json.loads(invoke(["evaluate", vae_model, digits_csv, "--json"]).text)
    assert {"neg_elbo", "kl", "bce", "mse"} <= vae.keys()
    assert vae["neg_elbo"] > vae["kl"] > 0
    sparse = tmp_path / "s.safetensors"
    assert invoke(["train", digits_csv, "-o", sparse, "--kind", "sparse", *FAST]).code == 0
    report = json.loads(invoke(["evaluate", sparse, digits_csv, "--json"]).text)
    assert 0 < report["mean_activation"] < 1 and 0 <= report["units_near_target"] <= 1
    assert "neg_elbo" not in report and "mean_activation" not in vae
    text = invoke(["evaluate", sparse, digits_csv])
    assert text.code == 0 and "mean activation" in text.text


def _hand_mahalanobis(rows: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    centred = rows - mean.astype(np.float64)
    return np.einsum("ij,jk,ik->i", centred, precision.astype(np.float64), centred)


def test_score_adds_residual_and_code_distances(basic_model: Path, digits_csv: Path) -> None:
    result = invoke(["score", basic_model, digits_csv, "--per-feature", "--threshold", "2.5"])
    assert result.code == 0, result.stderr
    lines = result.text.splitlines()
    assert lines[0].split(",")[:3] == ["score", "p0", "p1"]
    assert lines[0].split(",")[-1] == "anomaly"
    table = np.loadtxt(lines[1:], delimiter=",")
    assert table.shape == (400, 66)
    parts, residuals = _hand_parts(basic_model, digits_csv)
    np.testing.assert_allclose(table[:, 1:65], residuals**2, rtol=1e-3, atol=1e-5)
    # atol: the hand terms are float64, the CLI's float32 products; where a row's 10th
    # neighbour is tied within float32's rounding of a squared distance, its relative term
    # moves by 1e-4 of itself (the tie window is 1e-5), and its score by up to 0.003
    np.testing.assert_allclose(table[:, 0], sum(parts.values()), rtol=1e-3, atol=5e-3)
    np.testing.assert_array_equal(table[:, 65], (table[:, 0] > 2.5).astype(float))


def test_terms_are_what_each_term_adds_to_the_score(basic_model: Path, digits_csv: Path) -> None:
    result = invoke(["score", basic_model, digits_csv, "--terms", "--threshold", "2.5"])
    assert result.code == 0, result.stderr
    lines = result.text.splitlines()
    parts, _ = _hand_parts(basic_model, digits_csv)
    assert lines[0].split(",") == ["score", *(f"score.{name}" for name in parts), "anomaly"]
    table = np.loadtxt(lines[1:], delimiter=",")
    for column, (name, expected) in enumerate(parts.items(), start=1):
        np.testing.assert_allclose(table[:, column], expected, rtol=1e-3, atol=5e-3, err_msg=name)
    # they add to the score, which is computed from the same float64 parts
    np.testing.assert_allclose(table[:, 1:-1].sum(1), table[:, 0], rtol=1e-6, atol=1e-6)
    assert (table[:, 1] == 0).any()  # the residual adds nothing below its median
    assert (table[:, 2] > 0).mean() > 0.9  # the code adds its tail on both sides of it
    alone = np.loadtxt(invoke(["score", basic_model, digits_csv]).text.splitlines()[1:])
    np.testing.assert_array_equal(table[:, 0], alone)  # --terms leaves the score as it was


def _hand_parts(model: Path, csv: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """What each term adds to the score by its formula, and the rows' scaled residuals:

    score = 1/2 [T(d_M(residual)^2) - ln 2]+^a
    + 1/2 ([max(T(d_M(code)^2), T(-log sum_k w_k N(z; mu_k, P_k^-1))) - ln 2]+
    + 1/2 L(d_M(code)^2))^a, z = (x - c) A the row's leading principal components over
    their deviations (format 13)
    + 1/4 T(nearest training row)^a
    + 1/4 T(mean over the file's samples of the distance to the sample's nearest row)^a
    + 1/2 T(mean distance to the 10 nearest over theirs to their 10 nearest)^a
    + 1/2 T(sum over principal components of -log(histogram share), between bin centres)^a
    + 1/2 T(sum over integer columns of at most 32 values of -log((p + 0.1) / 1.1))^a, p the
    share of training rows with the row's value; the power a = 1.25 (format 16),
    T(x) = -log(1 - F(x)) + max(0, ln(x / q99)) / s, F from the percentiles, s the span,
    [t]+ = max(t, 0): the autoencoder's terms count above their training medians (T = ln 2);
    L(x) = max(0, -log(2 max(F(x), 1 / G))): the code's lower tail, 0 above the median.
    """
    fitted = modelfile.load(str(model))
    stats = fitted.code_stats
    assert stats is not None and stats.residual_precision is not None
    assert stats.reference is not None and stats.grids is not None
    codes = np.loadtxt(invoke(["encode", model, csv]).text.splitlines()[1:], delimiter=",")
    recon = np.loadtxt(invoke(["reconstruct", model, csv]).text.splitlines()[1:], delimiter=",")
    rows = read_table(str(csv)).values
    scaler = fitted.scaler
    residuals = scaler.transform(recon, clip=False) - scaler.transform(rows, clip=False)
    distance = _hand_mahalanobis(codes, stats.mean, stats.precision)
    residual = _hand_mahalanobis(residuals, stats.residual_mean, stats.residual_precision)
    scaled = scaler.transform(rows).astype(np.float64)
    reference = stats.reference.astype(np.float64)
    assert stats.reach is not None
    near, relative = _hand_neighbours(scaled, reference, stats.reach.astype(np.float64))
    _, reach = _hand_neighbours(reference, reference, None)
    assert stats.samples is not None and stats.samples.shape == (32, 64)
    sampled = _hand_sampled(scaled, reference, stats.samples)
    np.testing.assert_allclose(stats.reach, reach, rtol=1e-4)
    assert stats.mixture is not None
    assert stats.mixture.centre is not None and stats.mixture.axes is not None
    whitened = (scaled - stats.mixture.centre) @ stats.mixture.axes.astype(np.float64)
    assert whitened.shape[1] == codes.shape[1]  # as many components as the code has units
    mixture = _hand_mixture(whitened, stats.mixture)
    code_tail = np.maximum(
        _hand_tail(distance, stats.grids["code"]), _hand_tail(mixture, stats.grids["mixture"])
    )
    counts = {  # weight, count
        "residual": (0.5, np.maximum(_hand_tail(residual, stats.grids["residual"]) - np.log(2), 0)),
        "code": (
            0.5,
            np.maximum(code_tail - np.log(2), 0)
            + 0.5 * _hand_tail(distance, stats.grids["code"], lower=True),
        ),
        "neighbour": (0.25, _hand_tail(near, stats.grids["neighbour"])),
        "sampled": (0.25, _hand_tail(sampled, stats.grids["sampled"])),
        "relative": (0.5, _hand_tail(relative, stats.grids["relative"])),
        "density": (0.5, _hand_tail(_hand_density(scaled, stats.density), stats.grids["density"])),
        "discrete": (0.5, _hand_tail(_hand_discrete(rows, rows), stats.grids["discrete"])),
    }
    parts = {name: weight * count**1.25 for name, (weight, count) in counts.items()}  # format 16
    # the digits' columns are all discrete: none is left for the marginal term (format 15),
    # and the density counts half, along the components alone
    assert stats.marginal is None and "marginal" not in stats.grids
    return parts, residuals


def _hand_mixture(codes: np.ndarray, mixture) -> np.ndarray:
    """-log sum_k w_k (2 pi)^(-D/2) det(P_k)^(1/2) exp(-(x - mu_k)' P_k (x - mu_k) / 2)."""
    density = np.zeros(len(codes))
    for w, mu, p in zip(mixture.weights, mixture.means, mixture.precisions):
        p = p.astype(np.float64)
        d = codes - mu
        norm = (2 * math.pi) ** (-len(mu) / 2) * math.sqrt(np.linalg.det(p))
        density += float(w) * norm * np.exp(-0.5 * np.einsum("nd,de,ne->n", d, p, d))
    return -np.log(density)


def _hand_discrete(rows: np.ndarray, training: np.ndarray) -> np.ndarray:
    """Over the training rows' columns of integers with 2 to 32 values: -log((p + a) / (1 +
    a)), p = k / (n + m), k the training rows with the row's value, n rows, m values;
    p = 1 / (n + m + 1) if unseen; a = 0.1 as float32 holds it."""
    from collections import Counter

    a = float(np.float32(0.1))
    total = np.zeros(len(rows))
    for column in range(training.shape[1]):
        counts = Counter(training[:, column].tolist())
        if not 2 <= len(counts) <= 32 or any(v != int(v) for v in counts):
            continue
        n, m = len(training), len(counts)
        shares = [counts[v] / (n + m) if v in counts else 1 / (n + m + 1)
                  for v in rows[:, column].tolist()]  # fmt: skip
        total += [-math.log((p + a) / (1 + a)) for p in shares]
    return total


def _hand_density(rows: np.ndarray, density) -> np.ndarray:
    """Each principal component's knots read by numpy's interp (flat beyond the ends)."""
    components = (rows - density.mean.astype(np.float64)) @ density.axes.astype(np.float64)
    total = np.zeros(len(rows))
    for k in range(components.shape[1]):
        at = density.low[k] + density.step[k] * np.arange(density.knots.shape[1], dtype=np.float64)
        total += np.interp(components[:, k], at, density.knots[k])
    return total


def _hand_neighbours(
    rows: np.ndarray, reference: np.ndarray, reach: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The nearest reference row's distance and the relative distance, row by row: a row's
    own copy (the first at distance 0) is skipped; every row tied with the 10th counts, and
    one past it by a share s < 1e-5 of its squared distance counts 1 - s / 1e-5.
    Without ``reach``: the mean distance to the 10 nearest, floored at 1% of its mean."""
    k = min(10, len(reference) - 1)
    nearest, relative = [], []
    for row in rows:
        gaps = ((reference - row) ** 2).sum(1)
        order = np.argsort(gaps, kind="stable")
        if gaps[order[0]] <= 1e-5 * ((row**2).sum() + (reference[order[0]] ** 2).sum()):
            gaps[order[0]] = np.inf  # itself
            order = order[1:]
        kept = gaps[order[:k]]
        nearest.append(np.sqrt(kept[0]))
        mean = np.sqrt(kept).mean()
        if reach is None:
            relative.append(mean)
            continue
        weight = np.clip(1 - (gaps - kept[-1]) / max(1e-5 * kept[-1], 1e-30), 0, 1)
        relative.append(mean / (weight @ reach / weight.sum()))
    if reach is None:
        means = np.array(relative)
        return np.array(nearest), np.maximum(means, 0.01 * means.mean())
    return np.array(nearest), np.array(relative)


def _hand_sampled(rows: np.ndarray, reference: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Row by row, the mean over the samples of the distance to each sample's nearest row,
    a row's own copy (the first reference row at distance 0) left out of every sample."""
    out = []
    for row in rows:
        gaps = ((reference - row) ** 2).sum(1)
        first = int(np.argmin(gaps))
        if gaps[first] <= 1e-5 * ((row**2).sum() + (reference[first] ** 2).sum()):
            gaps[first] = np.inf  # itself
        out.append(np.mean([np.sqrt(gaps[sample].min()) for sample in samples]))
    return np.array(out)


def _hand_tail(values: np.ndarray, grid: np.ndarray, lower: bool = False) -> np.ndarray:
    """-log(1 - F(x)) + max(0, ln(x / q99)) / s, F interpolating the percentiles, s the
    larger of ln(q99 / q50) and ln(max / q99), or 160 where that is under 1e-3 (rounding);
    ``lower``: the lower tail instead, max(0, -log(2 max(F, 1 / G))).

    F rises linearly from 0 at the lowest percentile to (G - 1) / G at the highest, over
    each gap between neighbouring percentiles (a tie rises over 1e-4 of its value).
    """
    g = grid.astype(np.float64)
    out = []
    for x in values.astype(np.float64):
        steps = 0.0
        for low, high in itertools.pairwise(g):
            width = max(high - low, 1e-4 * max(abs(low), 1e-30))
            steps += min(max((x - low) / width, 0.0), 1.0)
        share = steps / len(g)
        if lower:
            out.append(max(-np.log(2 * max(share, 1 / len(g))), 0.0))
            continue
        q50, q99 = g[500], max(g[990], g[500] * 1.0001)
        span = max(np.log(q99 / q50), np.log(max(g[-1], q99) / q99))  # format 14
        span = span if span >= 1e-3 else 160.0  # a rise of rounding only: no growth rate
        out.append(-np.log1p(-share) + max(np.log(max(x, 1e-30) / q99), 0.0) / span)
    return np.array(out)


def _hand_robust_gaussian(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fit, keep the 75% nearest rows, refit; ridge 1e-2 of the mean variance."""

    def fit(part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cov = np.cov(part.T).reshape(part.shape[1], -1)
        ridge = 1e-2 * np.trace(cov) / len(cov)
        return part.mean(0), np.linalg.inv(cov + ridge * np.eye(len(cov)))

    mean, precision = fit(rows)
    distance = _hand_mahalanobis(rows, mean, precision)
    return fit(rows[distance <= np.quantile(distance, 0.75)])


def test_score_statistics_are_robust_training_moments(tmp_path: Path, table_csv: Path) -> None:
    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--val-fraction", "0", *FAST]).code == 0
    fitted = modelfile.load(str(model))
    rows = read_table(str(table_csv)).values
    stats = fitted.code_stats
    assert stats is not None
    terms = row_terms(fitted, rows, want_codes=True, want_residuals=True)
    for got, rows_of in (
        ((stats.mean, stats.precision), terms["codes"]),
        ((stats.residual_mean, stats.residual_precision), terms["residuals"]),
    ):
        mean, precision = _hand_robust_gaussian(rows_of.astype(np.float64))
        np.testing.assert_allclose(got[0], mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got[1], precision, rtol=1e-3, atol=1e-6)
    assert stats.error_norm == pytest.approx(np.median(terms["residual"]), rel=1e-4)
    assert stats.distance_norm == pytest.approx(np.median(terms["distance"]), rel=1e-4)
    # Each term's percentiles are those of the training rows (here every row is one)...
    grid = np.linspace(0, 1, 1001)
    names = ("residual", "code", "neighbour", "density")
    for name, key in zip(names, ("residual", "distance", "neighbour", "density")):
        expected = np.quantile(terms[key].astype(np.float64), grid)
        np.testing.assert_allclose(stats.grids[name], expected, rtol=1e-4, atol=1e-5)
    # ...so a training row's terms are uniform on their scale: T(x) = -log(1 - U), median
    # ln 2 each. Three count half of it whole, the autoencoder's two half of what lies above
    # ln 2, 0 for half the rows: the median score is at least about 1.5 ln 2 = 1.04.
    for name, key in zip(names, ("residual", "distance", "neighbour", "density")):
        tail = tails.tail(terms[key], stats.grids[name])
        assert np.median(tail) == pytest.approx(np.log(2), rel=0.02)
    assert 0.9 * 1.5 * np.log(2) < np.median(terms["score"]) < 2.5 * np.log(2)


def test_robust_statistics_ignore_a_quarter_of_far_rows() -> None:
    """Anomalies among the training rows do not widen the normal profile."""
    from aecli.gaussian import robust_gaussian

    rng = np.random.default_rng(0)
    normal = rng.normal(size=(900, 3))
    far = rng.normal(size=(100, 3)) * 20 + 50
    mean, precision, distance = robust_gaussian(np.vstack([normal, far]).astype(np.float32))
    np.testing.assert_allclose(mean, 0, atol=0.15)
    spread = np.sqrt(1 / np.diag(precision))
    assert np.all(spread < 1.0)  # the kept rows are the normal ones, trimmed to their core
    assert distance[900:].min() > distance[:900].max()
    _, diagonal, _ = robust_gaussian(np.vstack([normal, far]).astype(np.float32), diagonal=True)
    assert diagonal.shape == (3,)


def test_contamination_uses_the_training_percentiles(basic_model: Path) -> None:
    fitted = modelfile.load(str(basic_model))
    quantiles = fitted.score_quantiles["error"]
    assert quantiles.shape == QUANTILE_GRID.shape and np.all(np.diff(quantiles) >= 0)
    assert threshold_for(quantiles, 0.05) == pytest.approx(quantiles[950])
    assert threshold_for(quantiles, 0.0505) == pytest.approx(
        0.5 * (quantiles[949] + quantiles[950]), rel=1e-5
    )


def test_score_ids_and_flag_errors(tmp_path: Path, basic_model: Path, vae_model: Path) -> None:
    data = tmp_path / "d.csv"
    header = "who," + ",".join(f"p{i}" for i in range(64))
    data.write_text(header + "\n" + "\n".join(f"r{i}," + ",".join(["3"] * 64) for i in range(3)))
    ids = invoke(["score", basic_model, data, "--id-column", "who"])
    assert [line.split(",")[0] for line in ids.text.splitlines()] == ["who", "r0", "r1", "r2"]
    both = invoke(["score", basic_model, data, "--threshold", "1", "--contamination", "0.1"])
    assert both.code == 2 and "not both" in both.stderr
    assert invoke(["score", basic_model, data, "--contamination", "1.5"]).code == 2
    not_vae = invoke(["score", basic_model, data, "--elbo"])
    assert not_vae.code == 2 and "needs a vae" in not_vae.stderr
    elbo = invoke(["score", vae_model, data, "--elbo", "--contamination", "0.1"])
    assert elbo.code == 0, elbo.stderr
    elbo_terms = invoke(["score", vae_model, data, "--elbo", "--terms", "-o", tmp_path / "s.csv"])
    assert elbo_terms.code == 2 and "--terms: writes the terms of the default score" in (
        elbo_terms.stderr
    )
    assert not (tmp_path / "s.csv").exists()
    terms = invoke(["score", vae_model, data, "--terms", "--id-column", "who"])  # a vae's too
    assert terms.code == 0, terms.stderr
    assert terms.text.splitlines()[0].startswith("who,score,score.residual,score.code,")
    assert invoke(["evaluate", basic_model, data, "--baseline", "svd"]).code == 2


def _png_shape(path: Path) -> tuple[int, ...]:
    from matplotlib import image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return image.imread(path).shape


def test_a_csv_is_drawn_in_the_models_image_shape(tmp_path: Path, digits_csv: Path) -> None:
    """Issue 30: the quick start's model (--image-shape 8x8) drew no grid from its own CSV."""
    pytest.importorskip("matplotlib")
    model = tmp_path / "m.safetensors"
    assert invoke(["train", digits_csv, "--image-shape", "8x8", "-o", model, *FAST]).code == 0
    for command in (["reconstruct", model, digits_csv], ["interpolate", model, digits_csv,
                                                         "--rows", "0,5"]):  # fmt: skip
        picture = tmp_path / f"{command[0]}.png"
        result = invoke([*command, "--grid", picture])
        assert result.code == 0, result.stderr
        assert _png_shape(picture)[2] in (3, 4)


def test_pictures_from_the_shell(tmp_path: Path, digits: np.ndarray) -> None:
    pytest.importorskip("matplotlib")
    np.save(tmp_path / "d.npy", digits[:300].reshape(-1, 8, 8))
    model = tmp_path / "v.safetensors"
    log = tmp_path / "log.jsonl"
    args = ["train", tmp_path / "d.npy", "-o", model, "--kind", "vae", "--log", log, *FAST]
    assert invoke(args).code == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert {"loss", "reconstruction", "latent", "val_loss", "seconds"} <= records[0].keys()
    commands = {
        "sample.png": ["sample", model, "-n", "30", "--seed", "0"],
        "recon.png": ["reconstruct", model, tmp_path / "d.npy", "--show", "10"],
        "features.png": ["features", model],
        "walk.png": ["interpolate", model, tmp_path / "d.npy", "--rows", "0,5", "--steps", "6"],
    }
    for name, command in commands.items():
        result = invoke([*command, "--grid", tmp_path / name])
        assert result.code == 0, (name, result.stderr)
        assert result.stdout == b""  # with --grid and no -o, only the picture
        assert _png_shape(tmp_path / name)[2] in (3, 4)
    # 10 originals above 10 reconstructions: two rows of tiles
    height, width = _png_shape(tmp_path / "recon.png")[:2]
    assert width > 4 * height
    assert invoke(["curves", log, "-o", tmp_path / "curves.png"]).code == 0
    assert _png_shape(tmp_path / "curves.png")[:2] == (420, 700)


def test_interpolation_runs_between_the_two_rows_codes(basic_model: Path, digits_csv: Path) -> None:
    result = invoke(["interpolate", basic_model, digits_csv, "--rows", "3,9", "--steps", "5"])
    assert result.code == 0, result.stderr
    path = np.loadtxt(result.text.splitlines()[1:], delimiter=",")
    fitted = modelfile.load(str(basic_model))
    rows = read_table(str(digits_csv)).values[[3, 9]]
    ends = fitted.reconstruct(rows)
    np.testing.assert_allclose(path[[0, -1]], ends, rtol=1e-4, atol=1e-4)
    assert path.shape == (5, 64)
    missing = invoke(["interpolate", basic_model, digits_csv, "--rows", "3,4000"])
    assert missing.code == 2 and "no row 4000" in missing.stderr


def test_picture_errors_are_one_line(
    tmp_path: Path, basic_model: Path, digits_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_shape = invoke(["features", basic_model, "--grid", tmp_path / "f.png"])
    assert no_shape.code == 2 and "--image-shape 8x8" in no_shape.stderr
    wrong = invoke(["features", basic_model, "--grid", tmp_path / "f.png", "--image-shape", "7x8"])
    assert wrong.code == 2 and "56 pixels" in wrong.stderr
    not_png = invoke(["features", basic_model, "--grid", tmp_path / "f.jpg"])
    assert not_png.code == 2 and ".png" in not_png.stderr
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    missing = invoke(["features", basic_model, "--grid", tmp_path / "f.png"])
    assert missing.code == 2 and "pip install '.[plot]'" in missing.stderr
    (tmp_path / "bad.jsonl").write_text('{"epoch": 1}\nnot json\n')
    monkeypatch.delitem(sys.modules, "matplotlib")
    bad = invoke(["curves", tmp_path / "bad.jsonl", "-o", tmp_path / "c.png"])
    assert bad.code == 1 and "bad.jsonl:2:" in bad.stderr
    assert not (tmp_path / "f.png").exists() and not (tmp_path / "c.png").exists()


def test_an_internal_error_is_one_line_exit_70(
    basic_model: Path, digits_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aecli import fitted

    def broken(self, values):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(fitted.FittedModel, "encode", broken)
    result = invoke(["encode", basic_model, digits_csv])
    assert result.code == 70
    assert result.stderr.count("\n") == 1 and "RuntimeError: boom second line" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_bce_is_the_cross_entropy_of_the_reconstructions(
    tmp_path: Path, digits_csv: Path
) -> None:
    """evaluate's bce, by hand: mean over values of -x log p - (1 - x) log(1 - p)."""
    model = tmp_path / "bce.safetensors"
    args = ["train", digits_csv, "-o", model, "--loss", "bce", "--scale", "minmax", *FAST]
    assert invoke(args).code == 0
    report = json.loads(invoke(["evaluate", model, digits_csv, "--json"]).text)
    fitted = modelfile.load(str(model))
    rows = read_table(str(digits_csv)).values
    recon = np.loadtxt(
        invoke(["reconstruct", model, digits_csv]).text.splitlines()[1:], delimiter=","
    )
    x = fitted.scaler.transform(rows).astype(np.float64)
    p = fitted.scaler.transform(recon).astype(np.float64)  # sigmoid of the decoder's logits
    bce = -(x * np.log(p) + (1 - x) * np.log1p(-p)).mean()
    assert report["bce"] == pytest.approx(bce, rel=1e-3)


def test_wide_inputs_get_a_diagonal_residual_profile(
    tmp_path: Path, digits_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond FULL_COVARIANCE_MAX inputs a d x d matrix would dominate the file: diagonal."""
    from aecli import diagnostics

    monkeypatch.setattr(diagnostics, "FULL_COVARIANCE_MAX", 32)
    model = tmp_path / "m.safetensors"
    assert invoke(["train", digits_csv, "-o", model, *FAST]).code == 0
    fitted = modelfile.load(str(model))
    stats = fitted.code_stats
    assert stats is not None and stats.residual_precision is not None
    assert stats.residual_precision.shape == (64,)
    rows = read_table(str(digits_csv)).values[:50]
    terms = row_terms(fitted, rows, want_residuals=True)
    centred = terms["residuals"].astype(np.float64) - stats.residual_mean
    expected = (centred**2 * stats.residual_precision).sum(1)
    np.testing.assert_allclose(terms["residual"], expected, rtol=1e-4)


def test_a_feature_called_score_keeps_its_error_beside_the_score(tmp_path: Path) -> None:
    """A table's own column named score or anomaly (a credit score) wrote a second 'score'
    column with --per-feature: JSON Lines kept one of the two values, and pandas refused the
    Parquet file. Its error is now headed error.score."""
    import pandas as pd

    rows = np.random.default_rng(0).normal(size=(120, 3)).astype(np.float32)
    data = tmp_path / "d.csv"
    pd.DataFrame(rows, columns=["score", "anomaly", "c"]).to_csv(data, index=False)
    model = tmp_path / "m.safetensors"
    assert invoke(["train", data, "-o", model, *FAST]).code == 0
    errors = row_terms(modelfile.load(str(model)), rows, per_feature=True)["per_feature"]
    for name in ("s.jsonl", "s.parquet"):
        argv = ["score", model, data, "--per-feature", "--terms", "--threshold", "3"]
        assert invoke([*argv, "-o", tmp_path / name]).code == 0
        table = (
            pd.read_json(tmp_path / name, lines=True)
            if name.endswith(".jsonl")
            else pd.read_parquet(tmp_path / name)
        )
        assert list(table.columns[-4:]) == ["error.score", "error.anomaly", "c", "anomaly"]
        assert list(table.columns[:2]) == ["score", "score.residual"]
        np.testing.assert_allclose(table.iloc[:, -4:-1].to_numpy(), errors, rtol=1e-6)
        assert (table["anomaly"] == (table["score"] > 3)).all()
