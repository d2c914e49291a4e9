"""The principal start: a default network begins as PCA of its rows, whatever the seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aecli import modelfile
from aecli.config import Arch, Kind, ModelConfig, Noise
from aecli.models import build_model
from aecli.training._divergence import _untrained_error, mean_error
from aecli.training._start import (
    START_INPUTS,
    components,
    slope,
    start_principal,
    starts_principal,
)
from tests.conftest import invoke


def _rows(seed: int = 0) -> np.ndarray:
    """300 rows of 10 columns near a 3-dimensional plane, off the origin."""
    rng = np.random.default_rng(seed)
    plane = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 10))
    return (plane + 0.05 * rng.normal(size=(300, 10)) + rng.normal(size=10)).astype(np.float32)


def _pca_error(rows: np.ndarray, k: int) -> float:
    """Mean squared error per value of the rank-k PCA reconstruction (float64)."""
    centred = rows.astype(np.float64) - rows.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    kept = centred @ vt[:k].T @ vt[:k]
    return float(((centred - kept) ** 2).mean())


def _started(rows: np.ndarray, seed: int, activation: str = "elu") -> torch.nn.Module:
    config = ModelConfig(n_inputs=10, hidden=(16,), latent=4, activation=activation)
    torch.manual_seed(seed)
    model = build_model(config).eval()
    start_principal(model, components(rows))
    return model


SELU_SCALE, SELU_ALPHA = 1.0507009873554805, 1.6732632423543772


@pytest.mark.parametrize(
    ("name", "expected"),
    [("elu", 1.0), ("relu", 0.5), ("selu", SELU_SCALE * (1 + SELU_ALPHA) / 2), ("tanh", 1.0)],
)
def test_slope_is_the_mean_of_the_two_one_sided_derivatives_at_zero(
    name: str, expected: float
) -> None:
    """What a unit pair passes: act(t) - act(-t) = (act'(0+) + act'(0-)) t near 0."""
    assert slope(name) == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("activation", ["elu", "relu", "selu", "tanh"])
def test_the_untrained_network_codes_the_principal_components(activation: str) -> None:
    """Before a single step, the codes carry the leading component scores (each a linear
    function of them, R^2 > 0.9; the activation bends them a little, ReLU not at all), and
    the network reconstructs within 0.3 of the variance, where a random one is beyond it."""
    rows = _rows()
    x = torch.from_numpy(rows)
    started = _started(rows, 0, activation)
    with torch.no_grad():
        error = float((started.reconstruct(x) - x).square().mean())
        codes = started.codes(x).double().numpy()
        torch.manual_seed(0)
        config = ModelConfig(n_inputs=10, hidden=(16,), latent=4, activation=activation)
        random = float((build_model(config).eval().reconstruct(x) - x).square().mean())
    centred = rows.astype(np.float64) - rows.mean(0)
    scores = centred @ np.linalg.svd(centred, full_matrices=False)[2][:3].T
    design = np.c_[codes, np.ones(len(codes))]
    fitted = design @ np.linalg.lstsq(design, scores, rcond=None)[0]
    explained = 1 - ((scores - fitted) ** 2).sum(0) / (scores**2).sum(0)
    assert (explained > 0.9).all(), explained
    variance = float(rows.astype(np.float64).var(0).mean())
    assert error < 0.3 * variance < variance < random
    if activation == "relu":  # a ReLU pair's difference is exactly linear: PCA itself
        assert error < _pca_error(rows, 4) + 0.01 * variance


def test_two_seeds_start_almost_alike() -> None:
    """The seed's weights are kept at a hundredth: the two starts' reconstructions differ
    by a small share of what they reconstruct (random starts: by more than all of it)."""
    rows = _rows()
    x = torch.from_numpy(rows)
    with torch.no_grad():
        a, b = (_started(rows, seed).reconstruct(x) for seed in (0, 1))
    assert not torch.equal(a, b)  # the seed still tells units apart
    assert float((a - b).square().mean()) < 0.01 * float(x.var(0).mean())


def test_only_the_plain_dense_shape_starts_from_the_components() -> None:
    plain = ModelConfig(kind=Kind.basic, n_inputs=10, hidden=(8,), latent=2)
    assert starts_principal(plain)
    assert starts_principal(ModelConfig(n_inputs=START_INPUTS, hidden=(256,), latent=32))
    for other in (
        ModelConfig(kind=Kind.denoise, n_inputs=10, hidden=(8,), latent=2, noise=Noise.gaussian),
        ModelConfig(kind=Kind.basic, n_inputs=10, hidden=(8,), latent=2, noise=Noise.dropout),
        ModelConfig(kind=Kind.sparse, n_inputs=10, hidden=(8,), latent=2),
        ModelConfig(kind=Kind.vae, n_inputs=10, hidden=(8,), latent=2),
        ModelConfig(kind=Kind.basic, n_inputs=10, hidden=(8,), latent=2, tied=True),
        ModelConfig(kind=Kind.basic, n_inputs=10, hidden=(8, 4), latent=2),
        ModelConfig(kind=Kind.basic, n_inputs=10, hidden=(), latent=2),
        ModelConfig(kind=Kind.basic, n_inputs=START_INPUTS + 1, hidden=(64,), latent=16),
        ModelConfig(kind=Kind.basic, n_inputs=64, latent=4, arch=Arch.conv, image=(8, 8)),
    ):
        assert not starts_principal(other), other


def test_the_divergence_check_measures_the_network_the_run_started_from() -> None:
    rows = _rows()
    config = ModelConfig(kind=Kind.basic, n_inputs=10, hidden=(16,), latent=4)
    started = _untrained_error(config, 0, rows, False, components(rows))
    random = _untrained_error(config, 0, rows, False, None)
    assert started < 0.3 * mean_error(rows, False) < random


def test_train_starts_there_and_two_seeds_learn_nearly_one_network(tmp_path: Path) -> None:
    """Through the CLI, 5 epochs: the seeds' networks reconstruct alike and encode alike
    (from random starts: reconstructions 0.13 of the variance apart, codes 1.9 of theirs,
    unrelated), and the same seed still gives the same bytes."""
    data = tmp_path / "rows.npy"
    np.save(data, _rows(1))
    codes, outputs = [], []
    for name, seed in (("a", "0"), ("b", "1"), ("c", "0")):
        model = tmp_path / f"{name}.safetensors"
        assert invoke(["train", data, "-o", model, "--epochs", "5", "--seed", seed, "-q"]).code == 0
        fitted = modelfile.load(str(model))
        x = torch.from_numpy(fitted.scaler.transform(_rows(1)))
        with torch.no_grad():
            codes.append(fitted.model.codes(x))
            outputs.append(fitted.model.reconstruct(x) / x.var(0).mean().sqrt())
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "c.safetensors").read_bytes()
    gap = float((codes[0] - codes[1]).square().mean()) / float(codes[0].var(0).mean())
    assert 0 < gap < 0.3
    assert float((outputs[0] - outputs[1]).square().mean()) < 0.005
