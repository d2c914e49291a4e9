"""One suite over every variant: build, shapes, a step changes weights, loss falls."""

from __future__ import annotations

import pytest
import torch

from aecli.config import Kind, ModelConfig, TrainConfig
from aecli.errors import UsageError
from aecli.models import MODELS, Autoencoder, build_model
from tests.conftest import train_on

VARIANTS = [
    pytest.param(dict(kind=k, loss=loss), id=f"{k}-{loss}")
    for k in ("basic", "denoise", "sparse", "vae")
    for loss in ("mse", "bce")
] + [
    pytest.param(dict(kind="basic", loss="mse", tied=True), id="basic-tied"),
    pytest.param(dict(kind="vae", loss="bce", tied=True), id="vae-tied"),
    pytest.param(dict(kind="denoise", loss="mse", noise="gaussian"), id="denoise-gaussian"),
    pytest.param(dict(kind="denoise", loss="mse", noise="dropout"), id="denoise-dropout"),
    pytest.param(dict(kind="basic", loss="mse", hidden=()), id="basic-no-hidden"),
    pytest.param(dict(kind="basic", loss="mse", hidden=(12, 8), activation="selu"), id="stacked"),
]


def make(**overrides: object) -> Autoencoder:
    torch.manual_seed(0)
    options: dict = dict(n_inputs=10, hidden=(8,), latent=3)
    options.update(overrides)
    return build_model(ModelConfig(**options))


def data(rows: int = 256) -> torch.Tensor:
    """Rows in [0, 1] with a 3-dimensional structure (suits bce and mse)."""
    g = torch.Generator().manual_seed(0)
    z = torch.rand(rows, 3, generator=g)
    mixing = torch.rand(3, 10, generator=g)
    return (z @ mixing / 3).clamp(0, 1)


def test_every_kind_is_registered() -> None:
    assert set(MODELS) == {k.value for k in Kind}


def test_unknown_kind_lists_the_valid_ones() -> None:
    """Refused as the config is built, by aecli.choices.choice: the one check of a kind."""
    with pytest.raises(
        UsageError, match="unknown kind 'nope'; valid kinds: basic, denoise, sparse, vae"
    ):
        ModelConfig(kind="nope", n_inputs=4, latent=2)


@pytest.mark.parametrize("overrides", VARIANTS)
def test_shapes(overrides: dict) -> None:
    model = make(**overrides).eval()
    x = data(5)
    assert model.codes(x).shape == (5, 3)
    assert model.reconstruct(x).shape == (5, 10)
    loss, terms = model(x)
    assert loss.ndim == 0 and all(t.ndim == 0 for t in terms.values())


@pytest.mark.parametrize("overrides", VARIANTS)
def test_one_step_changes_every_parameter(overrides: dict) -> None:
    model = make(**overrides)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss, _ = model(data(32))
    loss.backward()
    optimizer.step()
    unchanged = [k for k, v in model.named_parameters() if torch.equal(v, before[k])]
    assert unchanged == []


@pytest.mark.parametrize("overrides", VARIANTS)
def test_training_lowers_the_loss(overrides: dict) -> None:
    spec = make(**overrides).config
    x = data().numpy()
    config = TrainConfig(epochs=15, batch_size=32, lr=3e-3, scale="none", val_fraction=0)
    _, history = train_on(x, spec, config)
    first, last = history.epochs[0].terms["loss"], history.last.terms["loss"]
    assert last < 0.8 * first, (first, last)


def test_tied_decoder_uses_the_transposed_encoder_weights() -> None:
    model = make(kind="basic", hidden=(8,), tied=True)
    names = dict(model.named_parameters())
    assert not any(name.startswith("decoder.") for name in names)  # nothing stored twice
    weights = [w for w, _ in model.decoder_layers()]
    assert [tuple(w.shape) for w in weights] == [(8, 3), (10, 8)]
    assert weights[0].data_ptr() == model.encoder[1].weight.data_ptr()
    assert weights[1].data_ptr() == model.encoder[0].weight.data_ptr()
    # a change to an encoder weight is a change to the decoder
    with torch.no_grad():
        model.encoder[0].weight[2, 5] = 42.0
    assert model.decoder_layers()[1][0][5, 2].item() == 42.0


def test_tied_has_fewer_parameters() -> None:
    free = sum(p.numel() for p in make(tied=False).parameters())
    tied = sum(p.numel() for p in make(tied=True).parameters())
    assert free - tied == 10 * 8 + 8 * 3


def test_noise_only_while_training() -> None:
    x = data(64)
    for noise in ("gaussian", "dropout"):
        model = make(kind="denoise", noise=noise, dropout=0.5)
        model.train()
        assert not torch.equal(model.corrupt(x), x)
        model.eval()
        assert torch.equal(model.corrupt(x), x)


def test_dropout_noise_zeroes_the_requested_fraction() -> None:
    model = make(kind="denoise", noise="dropout", dropout=0.3).train()
    torch.manual_seed(0)
    x = torch.ones(1000, 10)
    zeroed = (model.corrupt(x) == 0).float().mean().item()
    assert zeroed == pytest.approx(0.3, abs=0.02)


def test_denoising_loss_compares_with_the_clean_input() -> None:
    model = make(kind="denoise", noise="gaussian", noise_std=0.5).train()
    x = data(16)
    torch.manual_seed(0)
    loss, _ = model(x)
    torch.manual_seed(0)
    noisy = model.corrupt(x)
    expected = ((model.decode(model.encode(noisy)) - x) ** 2).mean()
    torch.testing.assert_close(loss, expected)


def test_sampling_decodes_prior_draws() -> None:
    model = make(kind="vae", loss="bce").eval()
    g = torch.Generator().manual_seed(0)
    rows = model.sample(7, g)
    assert rows.shape == (7, 10)
    assert rows.min() >= 0 and rows.max() <= 1  # sigmoid outputs under bce
