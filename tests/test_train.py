"""The trainer's stops: early stopping, a NaN loss and Ctrl-C all leave usable weights."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from aecli import modelfile
from aecli.io import read_table
from aecli.models import MODELS, Autoencoder
from aecli.training import missing_compiler
from tests.conftest import invoke


def test_early_stopping_keeps_the_best_weights(tmp_path: Path, digits_csv: Path) -> None:
    out = tmp_path / "m.safetensors"
    args = ["train", digits_csv, "-o", out, "--epochs", "500", "--lr", "0.02"]
    result = invoke([*args, "--early-stopping", "2"])
    assert result.code == 0, result.stderr
    assert "stopped early" in result.stderr
    summary = modelfile.load(str(out)).summary
    assert summary["stop"] == "early-stopping"
    assert summary["epochs"] < 500
    assert summary["kept_epoch"] == summary["epochs"] - 2


def test_early_stopping_needs_held_out_rows(tmp_path: Path, digits_csv: Path) -> None:
    out = tmp_path / "m.safetensors"
    result = invoke(
        ["train", digits_csv, "-o", out, "--early-stopping", "2", "--val-fraction", "0"]
    )
    assert result.code == 2 and "--early-stopping" in result.stderr


def test_a_diverging_run_exits_1_with_advice(tmp_path: Path, digits_csv: Path) -> None:
    out = tmp_path / "m.safetensors"
    result = invoke(["train", digits_csv, "-o", out, "--lr", "1e12", "--scale", "none"])
    assert result.code == 1
    assert "lower --lr" in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()


class _Diverging(Autoencoder):
    """A basic model whose loss turns inf from training step ``after`` + 1 on.

    Registered in place of the basic kind (``aecli.models.MODELS``): a subclass trains by
    autograd through ``forward``, as any kind without a hand-written step does.
    """

    after = 0
    steps = 0

    def forward(self, x: torch.Tensor) -> Any:
        loss, terms = super().forward(x)
        if self.training:
            type(self).steps += 1
            if type(self).steps > type(self).after:
                loss = loss * float("inf")
                terms = {k: v * float("inf") for k, v in terms.items()}
        return loss, terms


def test_a_retrain_that_diverges_keeps_the_old_model(
    tmp_path: Path, table_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last finite weights go beside the old model, which stays byte-identical."""
    out = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", out, "--epochs", "2", "-q"]).code == 0
    before = out.read_bytes()
    first = modelfile.load(str(out))
    steps = math.ceil(first.summary["rows"] / first.train_config.batch_size)  # an epoch's
    monkeypatch.setattr(_Diverging, "after", 2 * steps)  # epochs 1 and 2 finish, 3 diverges
    monkeypatch.setattr(_Diverging, "steps", 0)
    monkeypatch.setitem(MODELS, "basic", _Diverging)
    result = invoke(["train", table_csv, "-o", out, "--epochs", "5", "--seed", "4"])
    assert result.code == 1 and result.stderr.count("\n") == 1
    assert "m.last-finite.safetensors" in result.stderr and "left as it was" in result.stderr
    assert out.read_bytes() == before
    saved = modelfile.load(str(tmp_path / "m.last-finite.safetensors")).summary
    assert saved["kept_epoch"] == 2 and saved["stop"] == "non-finite"


def test_compile_without_a_compiler_is_a_usage_error(
    tmp_path: Path, table_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inductor failed inside the first step with an 'internal error'; now: one line, exit 2."""
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    out = tmp_path / "m.safetensors"
    result = invoke(["train", table_csv, "-o", out, "--compile", "--epochs", "1", "-q"])
    assert result.code == 2
    assert result.stderr.startswith("aecli: error: --compile: builds its kernels with a C++")
    assert "no-such-g++" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert invoke(["train", table_csv, "-o", out, "--epochs", "1", "-q"]).code == 0  # no flag
    monkeypatch.setenv("CXX", "")
    assert "$CXX (empty)" in invoke(["train", table_csv, "-o", out, "--compile", "-q"]).stderr


@pytest.mark.skipif(missing_compiler() is not None, reason="torch.compile needs a C++ compiler")
def test_compile_for_real_on_the_cpu(tmp_path: Path, table_csv: Path) -> None:
    """F12: --compile crashed on every kind, behind a test that mocked torch.compile.

    This one compiles for real (inductor on the CPU: slow, so one small run) and
    checks the model against the same run without --compile.
    """
    compiled, eager = tmp_path / "c.safetensors", tmp_path / "e.safetensors"
    args = ["train", table_csv, "--kind", "sparse", "--epochs", "2", "-q"]  # no random draws
    result = invoke([*args, "-o", compiled, "--compile"])
    assert result.code == 0, result.stderr
    assert invoke([*args, "-o", eager]).code == 0
    a, b = modelfile.load(str(compiled)), modelfile.load(str(eager))
    assert a.train_config.compile is True
    rows = read_table(str(table_csv)).values
    np.testing.assert_allclose(a.reconstruct(rows), b.reconstruct(rows), rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(
    missing_compiler() is not None or not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
    reason="torch.compile needs a C++ compiler; bf16 a CPU with AVX512-BF16 or AMX",
)
def test_compiled_bf16_is_deterministic_and_learns(tmp_path: Path, table_csv: Path) -> None:
    """--compile --precision bf16 compiles the hand-written step, noise draws included."""
    args = ["train", table_csv, "--kind", "denoise", "--noise", "dropout", "--epochs", "3", "-q"]
    paths = [tmp_path / f"{name}.safetensors" for name in ("c1", "c2", "eager")]
    for path, extra in zip(paths, [["--compile", "--precision", "bf16"]] * 2 + [[]], strict=True):
        result = invoke([*args, "-o", path, *extra])
        assert result.code == 0, result.stderr
    assert paths[0].read_bytes() == paths[1].read_bytes()  # the same seed, the same file
    fp32 = tmp_path / "c32.safetensors"  # compiled fp32 is eager fp32, dropout masks and all
    assert invoke([*args, "-o", fp32, "--compile"]).code == 0
    a, b = (modelfile.load(str(p)).model.state_dict() for p in (fp32, paths[2]))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    rows = read_table(str(table_csv)).values
    compiled, eager = (modelfile.load(str(p)) for p in (paths[0], paths[2]))
    error = {
        name: float(np.mean((model.reconstruct(rows) - rows) ** 2))
        for name, model in (("compiled", compiled), ("eager", eager))
    }
    assert error["compiled"] < 1.2 * error["eager"], error


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compile_for_real_on_cuda(tmp_path: Path, table_csv: Path) -> None:
    out = tmp_path / "m.safetensors"
    result = invoke(
        ["train", table_csv, "-o", out, "--compile", "--device", "cuda", "--epochs", "3", "-q",
         "--precision", "bf16"]
    )  # fmt: skip
    assert result.code == 0, result.stderr


def test_a_narrow_table_gets_a_four_unit_code_and_is_told(tmp_path: Path) -> None:
    """Issue 30 item 5: 7 columns gave 7-4-1-4-7 in silence; issue 39: 2 units moved the
    anomaly scores with the seed."""
    from aecli.config import default_latent

    got = [default_latent(n) for n in (1, 2, 3, 5, 7, 12, 16, 20, 64, 784)]
    assert got == [1, 1, 2, 4, 4, 4, 4, 5, 16, 32]
    data = tmp_path / "narrow.csv"
    rows = np.random.default_rng(0).normal(size=(100, 7))
    np.savetxt(data, rows, delimiter=",", header=",".join("abcdefg"), comments="")
    result = invoke(["train", data, "-o", tmp_path / "m.safetensors", "--epochs", "1"])
    assert "trained basic 7-16-4-16-7 (auto --latent 4) on " in result.stderr
    given = invoke(["train", data, "-o", tmp_path / "m.safetensors", "--epochs", "1",
                    "--latent", "3"])  # fmt: skip
    assert "auto --latent" not in given.stderr
