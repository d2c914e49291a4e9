"""--precision bf16: autocast forward with float32 weights, only where bf16 is native."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aecli import modelfile
from aecli.config import ModelConfig, TrainConfig
from aecli.models import build_model
from aecli.train import _train_epoch, make_optimizer
from tests.conftest import invoke

native_bf16 = pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="CPU without native bf16"
)


@native_bf16
def test_bf16_runs_layers_in_bf16_and_keeps_fp32_weights() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="vae", n_inputs=8, hidden=(6,), latent=2))
    seen: list[torch.dtype] = []
    model.encoder[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    terms = _train_epoch(model, make_optimizer(model, TrainConfig()), torch.rand(64, 8), 32, "bf16")
    assert set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(isinstance(v, float) and v == v for v in terms.values())


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
    result = invoke(["train", digits_csv, "-o", tmp_path / "m.safetensors", "--precision", "bf16"])
    assert result.code == 2 and "--precision bf16" in result.stderr
