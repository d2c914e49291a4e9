"""Each loss term against its formula on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from aecli import losses
from aecli.config import ModelConfig
from aecli.models import SparseAutoencoder, VariationalAutoencoder


def test_squared_error_is_row_sum_of_squares() -> None:
    out = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0], [3.0, -1.0]])
    assert losses.squared_error(out, target).tolist() == [5.0, 10.0]


def test_bernoulli_nll_matches_cross_entropy_formula() -> None:
    logits = torch.tensor([[0.3, -1.2, 2.0]])
    x = torch.tensor([[1.0, 0.0, 0.25]])
    s = torch.sigmoid(logits)
    expected = -(x * s.log() + (1 - x) * (1 - s).log()).sum(dim=1)
    torch.testing.assert_close(losses.bernoulli_nll(logits, x), expected)


def test_bernoulli_nll_is_finite_for_extreme_logits() -> None:
    logits = torch.tensor([[200.0, -200.0]])
    x = torch.tensor([[0.0, 1.0]])
    assert losses.bernoulli_nll(logits, x).item() == pytest.approx(400.0)


@pytest.mark.parametrize(("p", "q"), [(0.1, 0.2), (0.1, 0.05), (0.3, 0.9), (0.5, 0.5)])
def test_bernoulli_kl_matches_formula(p: float, q: float) -> None:
    expected = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    assert losses.bernoulli_kl(p, torch.tensor(q)).item() == pytest.approx(expected, rel=1e-5)


def test_bernoulli_kl_never_nan_at_the_edges() -> None:
    kl = losses.bernoulli_kl(0.1, torch.tensor([0.0, 1.0]))
    assert torch.isfinite(kl).all()
    assert (kl > 0).all()


def test_sparsity_penalty_uses_batch_mean_per_unit() -> None:
    codes = torch.tensor([[0.1, 0.9], [0.3, 0.5]])  # q = [0.2, 0.7]
    p = 0.1
    expected = sum(p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q)) for q in (0.2, 0.7))
    assert losses.sparsity_penalty(codes, p).item() == pytest.approx(expected, rel=1e-5)


def test_gaussian_kl_matches_closed_form_and_torch_distributions() -> None:
    mu = torch.tensor([[0.5, -1.0, 0.0]])
    gamma = torch.tensor([[0.2, -0.7, 0.0]])  # log sigma^2
    by_formula = 0.5 * (gamma.exp() + mu**2 - 1 - gamma).sum()
    sigma = torch.exp(0.5 * gamma)
    by_torch = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, sigma), torch.distributions.Normal(0.0, 1.0)
    ).sum()
    got = losses.gaussian_kl(mu, gamma)
    assert got.shape == (1,)
    torch.testing.assert_close(got[0], by_formula)
    torch.testing.assert_close(got[0], by_torch)


def test_gaussian_kl_is_zero_for_the_prior() -> None:
    assert losses.gaussian_kl(torch.zeros(2, 5), torch.zeros(2, 5)).tolist() == [0.0, 0.0]


def _vae(**kw: object) -> VariationalAutoencoder:
    torch.manual_seed(0)
    config = ModelConfig(kind="vae", n_inputs=4, hidden=(6,), latent=2, **kw)  # type: ignore[arg-type]
    return VariationalAutoencoder(config)


def test_reparameterize_has_the_right_mean_and_variance() -> None:
    vae = _vae()
    mu = torch.tensor([1.0, -2.0]).expand(200_000, 2)
    gamma = torch.log(torch.tensor([0.25, 4.0])).expand(200_000, 2)
    torch.manual_seed(1)
    z = vae.reparameterize(mu, gamma)
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(z.var(0), torch.tensor([0.25, 4.0]), atol=0, rtol=0.02)


def test_reparameterize_lets_gradients_reach_mu_and_gamma() -> None:
    vae = _vae()
    mu = torch.zeros(3, 2, requires_grad=True)
    gamma = torch.zeros(3, 2, requires_grad=True)
    vae.reparameterize(mu, gamma).pow(2).sum().backward()
    assert mu.grad is not None and gamma.grad is not None
    assert gamma.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_vae_loss_is_the_negative_elbo(loss: str) -> None:
    vae = _vae(loss=loss, beta=0.5)
    x = torch.rand(5, 4)
    torch.manual_seed(3)
    total, terms = vae(x)
    torch.manual_seed(3)
    mu, gamma = vae.encode(x)
    decoded = vae.decode(mu + torch.exp(0.5 * gamma) * torch.randn_like(mu))
    if loss == "bce":
        recon = (
            torch.nn.functional.binary_cross_entropy_with_logits(decoded, x, reduction="sum") / 5
        )
    else:
        recon = 0.5 * ((decoded - x) ** 2).sum() / 5
    latent = 0.5 * (gamma.exp() + mu**2 - 1 - gamma).sum() / 5
    torch.testing.assert_close(terms["reconstruction"], recon)
    torch.testing.assert_close(terms["latent"], latent)
    torch.testing.assert_close(total, recon + 0.5 * latent)


def test_sparse_loss_adds_weighted_kl_of_mean_activation() -> None:
    torch.manual_seed(0)
    config = ModelConfig(kind="sparse", n_inputs=4, hidden=(), latent=3, sparsity_weight=0.2)
    model = SparseAutoencoder(config).eval()
    x = torch.rand(8, 4)
    total, terms = model(x)
    codes = model.encode(x)
    assert codes.min() > 0 and codes.max() < 1  # a sigmoid coding layer
    q = codes.mean(0)
    kl = (0.1 * torch.log(0.1 / q) + 0.9 * torch.log(0.9 / (1 - q))).sum()
    recon = ((model.decode(codes) - x) ** 2).mean()
    torch.testing.assert_close(terms["sparsity"], kl)
    torch.testing.assert_close(terms["reconstruction"], recon)
    torch.testing.assert_close(total, recon + 0.2 * kl)
