"""Loose quality checks on the shipped digits, end to end through the shell commands.

Looser versions of what ``benchmarks/quality.py`` measures (its table gives the
real margins): each would fail if a variant stopped learning what it should.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aecli import modelfile
from tests.conftest import invoke


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory, digits: np.ndarray) -> tuple[Path, Path]:
    """80% of the digits to train on, 20% held out, as .npy files."""
    folder = tmp_path_factory.mktemp("quality")
    order = np.random.default_rng(0).permutation(len(digits))
    n_test = len(digits) // 5
    np.save(folder / "test.npy", digits[order[:n_test]].reshape(-1, 8, 8))
    np.save(folder / "train.npy", digits[order[n_test:]].reshape(-1, 8, 8))
    return folder / "train.npy", folder / "test.npy"


def _train(split: tuple[Path, Path], name: str, *flags: str) -> Path:
    model = split[0].parent / f"{name}.safetensors"
    result = invoke(["train", split[0], "-o", model, "--quiet", "--seed", "0", *flags])
    assert result.code == 0, result.stderr
    return model


def _evaluate(model: Path, data: Path, *flags: str) -> dict:
    result = invoke(["evaluate", model, data, "--json", *flags])
    assert result.code == 0, result.stderr
    return json.loads(result.text)


def test_basic_autoencoder_beats_pca_by_10_percent_held_out(split: tuple[Path, Path]) -> None:
    model = _train(split, "basic", "--latent", "8")
    report = _evaluate(model, split[1], "--baseline", "pca")
    assert report["mse_vs_pca"] <= 0.9, report  # measured 0.73-0.77 at default settings


def test_sparse_mean_activation_lands_on_the_target(split: tuple[Path, Path]) -> None:
    model = _train(split, "sparse", "--kind", "sparse", "--sparsity-target", "0.1")
    report = _evaluate(model, split[1])
    assert abs(report["mean_activation"] - 0.1) <= 0.02, report


def test_denoising_halves_the_error_of_noisy_inputs(
    split: tuple[Path, Path], digits: np.ndarray
) -> None:
    model = _train(split, "denoise", "--kind", "denoise", "--noise-std", "0.3")
    fitted = modelfile.load(str(model))
    clean = np.load(split[1]).reshape(-1, 64)
    # The same noise level as in training: 0.3 of the scaled range, 4.8 pixel units.
    noise = np.random.default_rng(1).normal(0, 0.3, clean.shape) * fitted.scaler.scale
    noisy = (clean + noise).astype(np.float32)
    np.save(split[0].parent / "noisy.npy", noisy)
    out = split[0].parent / "denoised.npy"
    assert invoke(["reconstruct", model, split[0].parent / "noisy.npy", "-o", out]).code == 0
    denoised = np.load(out).reshape(-1, 64)
    ratio = np.mean((denoised - clean) ** 2) / np.mean((noisy - clean) ** 2)
    assert ratio <= 0.5, ratio  # measured 0.34


def test_vae_elbo_falls_and_samples_look_like_the_data(split: tuple[Path, Path]) -> None:
    early = _train(split, "vae1", "--kind", "vae", "--epochs", "1")
    late = _train(split, "vae", "--kind", "vae", "--log", str(split[0].parent / "vae.jsonl"))
    first, last = (_evaluate(m, split[1])["neg_elbo"] for m in (early, late))
    assert last < 0.8 * first, (first, last)
    epochs = [json.loads(line) for line in (split[0].parent / "vae.jsonl").read_text().splitlines()]
    assert epochs[-1]["loss"] < epochs[0]["loss"]
    out = split[0].parent / "samples.npy"
    assert invoke(["sample", late, "-n", "2000", "--seed", "0", "-o", out]).code == 0
    samples = np.load(out).reshape(-1, 64)
    train = np.load(split[0]).reshape(-1, 64)
    gap = np.abs(samples.mean(0) - train.mean(0))
    assert gap.max() < 1.0, gap.max()  # pixel units 0..16; measured max 0.47


def _auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """Probability that an anomalous row scores above a normal one (Mann-Whitney)."""
    scores = np.concatenate([normal, anomalous])
    ranks = scores.argsort().argsort() + 1.0
    n, m = len(normal), len(anomalous)
    return float((ranks[n:].sum() - m * (m + 1) / 2) / (n * m))


def test_anomaly_scores_separate_shuffled_rows(split: tuple[Path, Path]) -> None:
    model = _train(split, "basic", "--latent", "8")
    held_out = np.load(split[1]).reshape(-1, 64)
    rng = np.random.default_rng(2)
    corrupted = np.array([rng.permutation(row) for row in held_out[:150]])
    mixed = np.concatenate([held_out[150:], corrupted])
    folder = split[0].parent
    np.save(folder / "mixed.npy", mixed)
    result = invoke(["score", model, folder / "mixed.npy", "--contamination", "0.05"])
    assert result.code == 0, result.stderr
    table = np.loadtxt(result.text.splitlines()[1:], delimiter=",")
    scores, flags = table[:, 0], table[:, 1]
    n_normal = len(held_out) - 150
    assert _auroc(scores[:n_normal], scores[n_normal:]) >= 0.95
    assert flags[n_normal:].mean() > 0.9 and flags[:n_normal].mean() < 0.15
