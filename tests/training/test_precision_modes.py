"""--precision bf16 and tf32: faster products, float32 weights, only where the hardware has them.

bf16: products in bfloat16 where bf16 is native. tf32: the fp32 step, with torch's TF32
switch on for the training only (CUDA GPUs of compute capability 8.0 or newer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from aecli import modelfile
from aecli.config import ModelConfig, TrainConfig
from aecli.models import build_model
from aecli.training._device import matmul_precision
from aecli.training._fastpath import BF16_FROM, bf16_pays
from aecli.training._loop import _train_epoch, fit, make_optimizer
from tests.conftest import invoke

native_bf16 = pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="CPU without native bf16"
)


class Products(TorchDispatchMode):
    """Records the dtype and multiply-adds of every matrix product torch runs while active."""

    OPS = ("mm", "addmm")

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.dtype, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in self.OPS:
            a, b = args[-2:]  # addmm's first is the bias
            self.seen.append((a.dtype, a.shape[0] * a.shape[1] * b.shape[1]))
        return func(*args, **(kwargs or {}))


@native_bf16
@pytest.mark.parametrize("kind", ["basic", "vae", "sparse"])  # hand-written step; autocast
def test_bf16_runs_products_in_bf16_and_keeps_fp32_weights(kind: str) -> None:
    """Big products in bf16; on a CPU the hand-written step keeps small ones in fp32.

    The 256 -> 256 layer at 256 rows is just BF16_FROM multiply-adds; the coding layer
    (256 -> 2) is far below. Autocast (sparse) runs every product in bf16.
    """
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, n_inputs=256, hidden=(256,), latent=2))
    optimizer = make_optimizer(model, TrainConfig())
    assert BF16_FROM == 256 * 256 * 256
    with Products() as products:
        terms = _train_epoch(model, optimizer, torch.rand(512, 256), 256, "bf16")
    assert len(products.seen) >= 2 * 8  # forward and backward of 4 layers, 2 batches
    for dtype, macs in products.seen:
        big = macs >= BF16_FROM or kind == "sparse"
        assert dtype == (torch.bfloat16 if big else torch.float32), (dtype, macs)
    assert {dtype for dtype, _ in products.seen} == (
        {torch.bfloat16} if kind == "sparse" else {torch.bfloat16, torch.float32}
    )
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
    assert all(isinstance(v, float) and v == v for v in terms.values())


@native_bf16
def test_bf16_autocast_only_where_a_layer_is_big() -> None:
    """Autograd kinds: autocast is all or nothing, on where one layer reaches BF16_FROM."""
    torch.manual_seed(0)
    small = build_model(ModelConfig(kind="sparse", n_inputs=64, hidden=(64,), latent=16))
    optimizer = make_optimizer(small, TrainConfig())
    with Products() as products:
        terms = _train_epoch(small, optimizer, torch.rand(128, 64), 64, "bf16")
    assert products.seen and {dtype for dtype, _ in products.seen} == {torch.float32}
    assert all(v == v for v in terms.values())
    assert not bf16_pays(small, 64)
    assert bf16_pays(small, BF16_FROM // (64 * 64))  # rows enough for the 64 x 64 layers
    conv = ModelConfig(n_inputs=64, latent=4, arch="conv", channels=(4, 8), image=(1, 8, 8))
    assert bf16_pays(build_model(conv), 1)  # convolutions: bf16 as asked


@native_bf16
def test_bf16_held_out_loss_is_close_to_fp32(tmp_path: Path, digits_csv: Path) -> None:
    losses = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.safetensors"
        args = ["train", digits_csv, "-o", out, "--precision", precision, "--epochs", "10", "-q"]
        assert invoke(args).code == 0
        fitted = modelfile.load(str(out))
        assert fitted.train_config.precision == precision
        report = json.loads(invoke(["evaluate", out, digits_csv, "--json"]).text)
        losses[precision] = report["mse"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.1)


def test_bf16_without_native_support_is_a_usage_error(
    tmp_path: Path, digits_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    out = tmp_path / "m.safetensors"
    result = invoke(["train", digits_csv, "-o", out, "--precision", "bf16", "--device", "cpu"])
    assert result.code == 2 and "--precision bf16" in result.stderr


def _matmul_state() -> tuple[str, str]:
    """torch's TF32 switch as its new API and its legacy one read it ("raises": they disagree)."""
    try:
        legacy = torch.get_float32_matmul_precision()
    except RuntimeError:
        legacy = "raises"
    return torch.backends.cuda.matmul.fp32_precision, legacy


@pytest.mark.parametrize(
    "setup",
    [
        lambda: None,  # torch's default: fp32 products, "none" in the new API
        lambda: setattr(torch.backends.cuda.matmul, "fp32_precision", "ieee"),
        lambda: setattr(torch.backends.cuda.matmul, "fp32_precision", "tf32"),
        lambda: torch.set_float32_matmul_precision("high"),
    ],
    ids=["default", "new-api-ieee", "new-api-tf32", "legacy-high"],
)
def test_tf32_switch_is_on_inside_and_as_the_user_left_it_after(setup: Any) -> None:
    """On while training (both APIs agree, or inductor's reading of the legacy one
    raises), then back to what it was, whichever API the user set it with."""
    saved = torch.backends.cuda.matmul.fp32_precision, torch.get_float32_matmul_precision()
    try:
        setup()
        before = _matmul_state()
        with matmul_precision("fp32"):
            assert _matmul_state() == before
        with pytest.raises(KeyError), matmul_precision("tf32"):
            assert torch.backends.cuda.matmul.fp32_precision == "tf32"
            if before[1] != "raises":  # the user's own disagreement stays theirs
                assert torch.get_float32_matmul_precision() == "high"
            raise KeyError("a failed epoch")
        assert _matmul_state() == before
    finally:
        torch.set_float32_matmul_precision(saved[1])
        torch.backends.cuda.matmul.fp32_precision = saved[0]


def test_tf32_trains_the_fp32_step_with_the_switch_on() -> None:
    """The plumbing, on a CPU: tf32 takes fp32's hand-written step, the switch is on while
    every epoch runs and off afterwards. A CPU has no TF32 units, so the weights are fp32's
    bit for bit (the autograd step, or any other, would round differently). The loop
    itself, under the switch as the recipe sets it: ``prepare`` refuses tf32 on a CPU.
    """
    values = torch.from_numpy(np.random.default_rng(0).random((200, 12), dtype=np.float32))
    config = ModelConfig(n_inputs=12, hidden=(8,), latent=3)
    weights, switch = {}, []
    for precision in ("fp32", "tf32"):
        torch.manual_seed(0)
        model = build_model(config)
        train = TrainConfig(epochs=3, device="cpu", precision=precision)
        on_epoch = lambda stats: switch.append(torch.backends.cuda.matmul.allow_tf32)  # noqa: E731
        with matmul_precision(precision):
            fit(model, values, None, train, on_epoch)
        weights[precision] = model.state_dict()
    assert switch == [False] * 3 + [True] * 3
    assert _matmul_state() == ("none", "highest")  # torch's default again
    for name, value in weights["fp32"].items():
        assert torch.equal(value, weights["tf32"][name]), name


def test_tf32_on_a_cpu_is_a_usage_error(tmp_path: Path, digits_csv: Path) -> None:
    out = tmp_path / "m.safetensors"
    result = invoke(["train", digits_csv, "-o", out, "--precision", "tf32", "--device", "cpu"])
    assert result.code == 2 and "--precision tf32" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0),
    reason="needs a CUDA device with TF32 units",
)
def test_tf32_on_cuda_is_close_to_fp32_and_deterministic(tmp_path: Path, digits_csv: Path) -> None:
    losses, files = {}, []
    for name, precision in [("fp32", "fp32"), ("tf32", "tf32"), ("again", "tf32")]:
        out = tmp_path / f"{name}.safetensors"
        args = ["train", digits_csv, "-o", out, "--precision", precision, "--device", "cuda"]
        assert invoke([*args, "--epochs", "10", "-q"]).code == 0
        assert modelfile.load(str(out)).train_config.precision == precision
        report = json.loads(invoke(["evaluate", out, digits_csv, "--json"]).text)
        losses[name] = report["mse"]
        files.append(out.read_bytes())
    assert losses["tf32"] == pytest.approx(losses["fp32"], rel=0.1)
    assert files[1] == files[2]  # same seed, same device: the same file
    assert _matmul_state() == ("none", "highest")
