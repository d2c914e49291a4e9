"""The code's second reading (aecli/mixture.py): a mixture of Gaussians, by formula and by BIC,
of the rows' whitened leading components (format 13)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from aecli import mixture, modelfile, tails
from tests.conftest import invoke, rewrite_model


def by_hand(codes: np.ndarray, fitted: mixture.Mixture) -> np.ndarray:
    """-log sum_k w_k (2 pi)^(-D/2) det(P_k)^(1/2) exp(-(x - mu_k)' P_k (x - mu_k) / 2)."""
    total = np.zeros(len(codes))
    for w, mu, p in zip(fitted.weights, fitted.means, fitted.precisions):
        p = p.astype(np.float64)
        for i, x in enumerate(codes.astype(np.float64)):
            d = x - mu
            norm = (2 * math.pi) ** (-len(mu) / 2) * math.sqrt(np.linalg.det(p))
            total[i] += float(w) * norm * math.exp(-0.5 * d @ p @ d)
    return -np.log(total)


def blobs(centres: list[list[float]], rows: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(c, 0.5, (rows, len(c))) for c in centres]).astype(np.float32)


def test_the_term_is_the_mixtures_density_by_its_formula() -> None:
    codes = blobs([[0.0, 0.0], [4.0, 1.0]])
    fitted = mixture.fit(codes, seed=1)
    new = np.array([[0.0, 0.0], [2.0, 0.5], [4.0, 1.0], [9.0, -3.0]], np.float32)
    np.testing.assert_allclose(fitted.term(new), by_hand(new, fitted), rtol=1e-10)
    assert fitted.weights.dtype == fitted.means.dtype == fitted.precisions.dtype == np.float32
    assert float(fitted.weights.sum()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    ("centres", "count"),
    [([[0.0, 0.0]], 1), ([[0.0, 0.0], [5.0, 0.0]], 2), ([[0, 0], [5, 0], [0, 5]], 3)],
)
def test_bic_finds_as_many_components_as_clusters(centres: list, count: int) -> None:
    fitted = mixture.fit(blobs(centres), seed=1)
    assert len(fitted.weights) == count
    found = sorted(map(tuple, np.round(fitted.means).astype(int).tolist()))
    assert found == sorted(map(tuple, np.array(centres, dtype=int).tolist()))


def test_the_same_codes_give_the_same_mixture() -> None:
    codes = blobs([[0.0, 0.0, 1.0], [3.0, 3.0, 0.0]], rows=3000)  # over FIT_ROWS: sampled
    first, second = mixture.fit(codes, seed=4), mixture.fit(codes.copy(), seed=4)
    for part in mixture.PARTS:
        assert np.array_equal(getattr(first, part), getattr(second, part))


def test_a_code_between_two_kinds_is_rare_by_the_mixture_not_by_one_gaussian() -> None:
    """Why the code has a second reading: one Gaussian of two clusters puts its centre
    between them, where no training code is; the mixture finds it emptiest there."""
    from aecli.fitted import mahalanobis
    from aecli.gaussian import robust_gaussian

    codes = blobs([[-3.0, 0.0], [3.0, 0.0]])
    mean, precision, distance = robust_gaussian(codes)
    fitted = mixture.fit(codes, seed=1)
    between = np.array([[0.0, 0.0]], np.float32)
    gaussian_grid = np.quantile(distance, np.linspace(0, 1, 1001))
    mixture_grid = np.quantile(fitted.term(codes), np.linspace(0, 1, 1001))
    by_gaussian = tails.tail(mahalanobis(between, mean, precision), gaussian_grid)[0]
    by_mixture = tails.tail(fitted.term(between), mixture_grid)[0]
    assert by_gaussian < math.log(2)  # nearer the centre than the median training code
    assert by_mixture > -math.log(0.01)  # rarer than 99% of the training codes


def test_a_trained_file_holds_the_mixture_and_its_percentiles(tmp_path: Path) -> None:
    rows = blobs([[0.0, 0.0, 0.0, 0.0], [6.0, 6.0, 0.0, 0.0]])
    np.save(tmp_path / "t.npy", rows)
    model = tmp_path / "m.safetensors"
    assert invoke(["train", tmp_path / "t.npy", "-o", model, "--epochs", "3", "-q"]).code == 0
    stats = modelfile.load(str(model)).code_stats
    assert stats is not None and stats.mixture is not None and stats.grids is not None
    assert len(stats.mixture.weights) >= 2 and "mixture" in stats.grids
    assert "mixture" not in stats.parts()  # it is the code's reading, not a part of its own


def test_the_mixture_reads_the_rows_whitened_leading_components() -> None:
    """Format 13: the components along the given axes, each over its deviation on the
    fitting rows, and the term is the density of those."""
    rng = np.random.default_rng(3)
    rows = np.concatenate([rng.normal(0, 1, (300, 5)), rng.normal(4, 1, (300, 5))])
    rows[:, 0] *= 10.0  # one wide direction: whitening puts it on the others' footing
    centre = rows.mean(0)
    axes = np.linalg.svd(rows - centre, full_matrices=False)[2][:2].T  # [5, 2]
    fitted = mixture.fit_rows(rows, centre, axes, seed=1)
    assert fitted.axes is not None and fitted.axes.shape == (5, 2)
    assert fitted.centre is not None
    whitened = (rows - fitted.centre.astype(np.float64)) @ fitted.axes.astype(np.float64)
    np.testing.assert_allclose(whitened.std(0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(fitted.project(rows), whitened, rtol=1e-6)
    codes = np.zeros((len(rows), 3))  # not read: the mixture reads the rows
    np.testing.assert_allclose(
        fitted.read(codes, rows[:20]), by_hand(whitened[:20], fitted), rtol=1e-5
    )


def test_a_table_wider_than_its_rows_reads_no_more_components_than_they_carry(
    tmp_path: Path,
) -> None:
    """20 rows of 300 columns: read along as many components as the code has units, every
    training row sat at one Mahalanobis distance and a held-out row far beyond it (it
    scored 14,000); at one component for each 10 rows, every row scores as the others."""
    rows = np.random.default_rng(0).normal(size=(20, 300)).astype(np.float32)
    np.save(tmp_path / "wide.npy", rows)
    model = tmp_path / "m.safetensors"
    assert invoke(["train", tmp_path / "wide.npy", "-o", model, "--epochs", "3", "-q"]).code == 0
    stats = modelfile.load(str(model)).code_stats
    assert stats is not None and stats.mixture is not None and stats.mixture.axes is not None
    assert stats.mixture.axes.shape[1] <= 2  # 18 rows fitted it, 2 held out
    result = invoke(["score", model, tmp_path / "wide.npy"])
    assert result.code == 0, result.stderr
    scores = np.loadtxt(result.text.splitlines()[1:])
    assert np.isfinite(scores).all() and scores.max() < 5 * np.median(scores)


def test_two_seeds_store_the_same_mixture(tmp_path: Path) -> None:
    """Why format 13 reads the rows: fitted to the codes, the mixture (its number of
    components above all) moved with --seed, and the score with it; the rows' components
    do not, so two seeds that train different networks store the same mixture."""
    from safetensors.numpy import load_file

    rows = blobs([[0.0, 0.0, 0.0, 0.0], [6.0, 6.0, 0.0, 0.0], [0.0, 6.0, 6.0, 0.0]])
    np.save(tmp_path / "t.npy", rows)
    files = []
    for seed in ("0", "1"):
        model = tmp_path / f"m{seed}.safetensors"
        assert (
            invoke(["train", tmp_path / "t.npy", "-o", model, "--epochs", "3", "--seed", seed]).code
            == 0
        )
        files.append(load_file(str(model)))
    first, second = files
    assert not np.array_equal(first["codes.mean"], second["codes.mean"])  # two networks
    assert first["mixture.axes"].shape == (
        4,
        modelfile.load(str(tmp_path / "m0.safetensors")).config.latent,
    )
    for name in ("weights", "means", "precisions", "centre", "axes"):
        np.testing.assert_array_equal(first[f"mixture.{name}"], second[f"mixture.{name}"])
    np.testing.assert_array_equal(first["terms.mixture"], second["terms.mixture"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("mixture.means"), "tensors are incomplete"),
        (lambda a: a.update({"mixture.means": a["mixture.means"][:, :1].copy()}), "code size"),
        (lambda a: a.update({"mixture.weights": a["mixture.weights"] * 2}), "damaged"),
        (lambda a: a.update({"mixture.weights": -a["mixture.weights"]}), "damaged"),
        (lambda a: a.update({"mixture.precisions": -a["mixture.precisions"]}), "positive definite"),
        (lambda a: a.update({"mixture.means": a["mixture.means"] * np.nan}), "damaged"),
        (lambda a: a.pop("mixture.axes"), "tensors are incomplete"),
        (lambda a: a.update({"mixture.axes": a["mixture.axes"][:2].copy()}), "number of inputs"),
        (
            lambda a: a.update({"mixture.centre": a["mixture.centre"][:2].copy()}),
            "number of inputs",
        ),
        (lambda a: a.update({"mixture.axes": a["mixture.axes"] * np.inf}), "damaged"),
    ],
)
def test_a_damaged_mixture_is_refused(tmp_path: Path, change, message: str) -> None:
    rows = blobs([[0.0, 0.0, 0.0], [6.0, 6.0, 0.0]])
    np.save(tmp_path / "t.npy", rows)
    model = tmp_path / "m.safetensors"
    assert invoke(["train", tmp_path / "t.npy", "-o", model, "--epochs", "1", "-q"]).code == 0
    damaged = tmp_path / "damaged.safetensors"
    rewrite_model(model, damaged, change)
    result = invoke(["score", damaged, tmp_path / "t.npy"])
    assert result.code != 0 and message in result.stderr and not result.stdout
    assert "Traceback" not in result.stderr and damaged.name in result.stderr


def test_the_term_in_blocks_is_the_term_whole() -> None:
    codes = blobs([[0.0, 0.0], [3.0, 1.0]], rows=mixture.BLOCK)  # two blocks and none over
    fitted = mixture.fit(codes, seed=2)
    whole = -mixture.log_sum_exp(
        mixture.component_logs(codes, fitted.means, fitted.precisions, fitted.offsets())
    )
    np.testing.assert_array_equal(fitted.term(codes), whole)
