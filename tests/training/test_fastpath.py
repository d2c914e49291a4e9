"""The hand-written training step gives autograd's loss and gradients, case by case."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from aecli.config import ModelConfig
from aecli.models import build_model
from aecli.training._device import missing_compiler
from aecli.training._fastpath import BF16_FROM, ELU_BY_EXP, _elu, manual_step
from aecli.training._optim import FusedAdam


def test_elu_by_exp_is_elu() -> None:
    """Wide layers take ELU as max(x, exp(min(x, 0)) - 1); it is F.elu to 1e-7."""
    torch.manual_seed(0)
    edges = torch.tensor([0.0, -0.0, 1e-30, -1e-30, -1e-7, 1e-7, -88.0, -200.0, 50.0])
    values = torch.cat([edges, torch.randn(ELU_BY_EXP) * 4]).reshape(-1, 1)
    fast = _elu(values)
    assert values.numel() >= ELU_BY_EXP  # the exp branch, not F.elu
    torch.testing.assert_close(fast, F.elu(values), rtol=0, atol=1.2e-7)
    assert torch.equal(fast[values > 0], values[values > 0])  # exact above zero


CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ],
)


@pytest.mark.parametrize("device", ["cpu", CUDA])  # CPU: the exp-based ELU; CUDA: F.elu
@pytest.mark.parametrize("vae", [False, True])
def test_wide_layers_match_autograd(vae: bool, device: str) -> None:
    """A batch wide enough for the exp-based ELU: gradients still autograd's (F.elu)."""
    torch.manual_seed(0)
    config = ModelConfig(kind="vae" if vae else "basic", n_inputs=40, hidden=(160,), latent=4)
    model = build_model(config).to(device)
    twin = copy.deepcopy(model)
    batch = torch.rand(256, 40, device=device)
    assert batch.shape[0] * 160 >= ELU_BY_EXP
    torch.manual_seed(1)
    manual_loss, _ = manual_step(model, "fp32", model)(batch)  # type: ignore[misc]
    torch.manual_seed(1)
    auto_loss, _ = twin(batch)
    auto_loss.backward()
    torch.testing.assert_close(manual_loss, auto_loss.detach(), rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("activation", ["elu", "selu", "relu", "tanh"])
@pytest.mark.parametrize("loss", ["mse", "bce"])
@pytest.mark.parametrize("noise", ["none", "gaussian", "dropout"])
@pytest.mark.parametrize("hidden", [(), (7,), (9, 6)])
@pytest.mark.parametrize("vae", [False, True])
def test_manual_gradients_match_autograd(
    activation: str, loss: str, noise: str, hidden: tuple[int, ...], vae: bool
) -> None:
    torch.manual_seed(0)
    kind = "vae" if vae else ("denoise" if noise != "none" else "basic")
    config = ModelConfig(
        kind=kind,
        beta=0.7,
        n_inputs=10,
        hidden=hidden,
        latent=3,
        activation=activation,
        loss=loss,
        noise=noise,
    )
    model = build_model(config)
    twin = copy.deepcopy(model)
    model.train()
    twin.train()
    batch = torch.rand(16, 10)
    step = manual_step(model, "fp32", model)
    assert step is not None
    torch.manual_seed(1)  # the same noise draws on both paths
    manual_loss, terms = step(batch)
    torch.manual_seed(1)
    auto_loss, auto_terms = twin(batch)
    auto_loss.backward()
    torch.testing.assert_close(manual_loss, auto_loss.detach(), rtol=1e-5, atol=1e-6)
    assert terms.keys() == auto_terms.keys()
    for name, value in terms.items():
        torch.testing.assert_close(value, auto_terms[name].detach(), rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("vae", [False, True])
def test_the_step_follows_its_weights_through_updates_and_restores(vae: bool) -> None:
    """The step keeps views of the weights (``_Layer``): Adam's updates and a restored
    snapshot must reach them, so every step's loss is autograd's on the same weights."""
    torch.manual_seed(0)
    config = ModelConfig(kind="vae" if vae else "basic", n_inputs=8, hidden=(6,), latent=2)
    model = build_model(config)
    twin = copy.deepcopy(model)
    batch = torch.rand(16, 8)
    step = manual_step(model, "fp32", model)
    assert step is not None
    adam, twin_adam = FusedAdam(model.parameters(), 0.05), FusedAdam(twin.parameters(), 0.05)
    snapshot = copy.deepcopy(model.state_dict())
    for i in range(4):
        if i == 2:  # as a non-finite epoch or early stopping restores the weights
            model.load_state_dict(snapshot)
            twin.load_state_dict(snapshot)
        torch.manual_seed(i)
        loss, _ = step(batch)
        torch.manual_seed(i)
        twin_loss, _ = twin(batch)
        twin_adam.zero_grad()
        twin_loss.backward()
        torch.testing.assert_close(loss, twin_loss.detach(), rtol=1e-5, atol=1e-6)
        adam.step()
        twin_adam.step()
    assert not torch.equal(model.state_dict()["encoder.0.weight"], snapshot["encoder.0.weight"])


@pytest.mark.parametrize(
    ("config", "precision"),
    [
        (ModelConfig(n_inputs=6, hidden=(4,), latent=2, tied=True), "fp32"),
        (ModelConfig(kind="sparse", n_inputs=6, hidden=(4,), latent=2), "fp32"),
        (ModelConfig(kind="sparse", n_inputs=6, hidden=(4,), latent=2), "bf16"),
    ],
)
def test_other_models_keep_autograd(config: ModelConfig, precision: str) -> None:
    model = build_model(config)
    assert manual_step(model, precision, model) is None
    plain = build_model(ModelConfig(n_inputs=6, hidden=(4,), latent=2))
    assert manual_step(plain, "fp32", object()) is None  # --compile goes through autograd


@pytest.mark.parametrize("activation", ["elu", "tanh"])
@pytest.mark.parametrize("vae", [False, True])
def test_eager_bf16_step_is_autocast_up_to_rounding(vae: bool, activation: str) -> None:
    """Eager bf16 takes the hand-written step: autocast's loss and gradients, in float32.

    A batch wide enough for the exp-based ELU and for bf16 products in the big layers
    (the coding layers stay fp32), so every kernel of the bf16 step runs; both are held
    to the fp32 gradients with the same bf16 tolerance.
    """
    torch.manual_seed(0)
    kind = "vae" if vae else "basic"
    config = ModelConfig(kind=kind, n_inputs=256, hidden=(256,), latent=4, activation=activation)
    exact = build_model(config)
    batch = torch.rand(256, 256)
    assert batch.shape[0] * 256 >= ELU_BY_EXP and batch.shape[0] * 256 * 256 >= BF16_FROM
    grads = {}
    for name in ("fp32", "bf16", "autocast"):
        model = copy.deepcopy(exact)
        torch.manual_seed(1)
        if name == "autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss, _ = model(batch)
            loss.backward()
        else:
            step = manual_step(model, name, model)
            assert step is not None
            loss, _ = step(batch)
        grads[name] = [loss.detach().reshape(1), *(p.grad for p in model.parameters())]
        assert all(g is not None and g.dtype == torch.float32 for g in grads[name])
    assert not torch.equal(grads["bf16"][1], grads["fp32"][1])  # the first layer ran in bf16
    for name in ("bf16", "autocast"):
        for a, b in zip(grads["fp32"], grads[name], strict=True):  # 8 bits of mantissa
            assert float((b - a).norm()) <= 0.01 * float(a.norm()) + 1e-5, name


needs_compiler = pytest.mark.skipif(
    missing_compiler() is not None, reason="torch.compile needs a C++ compiler"
)


@needs_compiler
@pytest.mark.parametrize("vae", [False, True])
def test_compiled_step_is_the_eager_step_and_bf16_is_close(vae: bool) -> None:
    """--compile compiles the hand-written step: fp32 gives its gradients, bf16 near them.

    The VAE's eps are the eager step's: compiled code draws from torch's generator.
    """
    torch.manual_seed(0)
    config = ModelConfig(kind="vae" if vae else "basic", n_inputs=256, hidden=(256,), latent=3)
    eager = build_model(config)
    batch = torch.rand(256, 256)  # the first and last layers' products in bf16 (BF16_FROM)
    grads = {}
    for name, precision, compiled in [("eager", "fp32", False), ("fp32", "fp32", True),
                                      ("bf16", "bf16", True)]:  # fmt: skip
        model = copy.deepcopy(eager)
        step = manual_step(model, precision, model, compiled=compiled)
        assert step is not None
        torch.manual_seed(1)
        loss, _ = step(batch)
        grads[name] = [loss.reshape(1), *(p.grad for p in model.parameters())]
        assert all(g is not None and g.dtype == torch.float32 for g in grads[name])
    for a, b in zip(grads["eager"], grads["fp32"], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    assert not torch.equal(grads["bf16"][1], grads["fp32"][1])
    for a, b in zip(grads["eager"], grads["bf16"], strict=True):  # bf16: 8 bits of mantissa
        assert float((b - a).norm()) <= 0.05 * float(a.norm()) + 1e-4
