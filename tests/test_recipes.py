"""The chapter's other recipes: one autoencoder at a time, KL warm-up, active units."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from aecli import modelfile
from aecli.config import ModelConfig, TrainConfig
from aecli.diagnostics import Evaluator
from aecli.io import Table
from tests.conftest import invoke, signal_at_epoch, train_on


def _train(table: np.ndarray, config: ModelConfig, train: TrainConfig, seen: list) -> Any:
    fitted, _ = train_on(Table(table, None, (table.shape[1],)), config, train, seen.append)
    return fitted


@pytest.mark.parametrize("kind", ["basic", "denoise", "sparse"])
def test_layerwise_runs_its_stages_in_order_and_fine_tuning_improves_the_stack(
    digits: np.ndarray, kind: str
) -> None:
    noise = "gaussian" if kind == "denoise" else "none"
    config = ModelConfig(kind=kind, n_inputs=64, hidden=(32, 16), latent=8, noise=noise)
    train = TrainConfig(epochs=3, finetune_epochs=6, layerwise=True, seed=2, scale="minmax")
    seen: list = []
    fitted = _train(digits[:600], config, train, seen)
    stages = [stats.stage for stats in seen]
    expected = ["layer 1 of 3: 64-32-64", "layer 2 of 3: 32-16-32", "layer 3 of 3: 16-8-16"]
    assert stages == [s for s in expected for _ in range(3)] + ["fine-tune"] * 6
    summary = fitted.summary["layerwise"]
    assert [s["stage"] for s in summary["stages"]] == expected
    # The stack as the stages left it, against the same stack fine-tuned (held-out loss).
    assert fitted.summary["val_loss"] < summary["stacked_loss"]
    if kind == "sparse":
        assert "sparsity" in seen[8].terms  # the coding stage carries the KL penalty
        assert "sparsity" not in seen[0].terms


def test_layerwise_from_the_shell(tmp_path: Path, digits_csv: Path) -> None:
    log, out = tmp_path / "log.jsonl", tmp_path / "m.safetensors"
    args = ["train", digits_csv, "-o", out, "--hidden", "16", "--latent", "4", "--epochs", "2"]
    result = invoke([*args, "--layerwise", "--finetune-epochs", "3", "--log", log])
    assert result.code == 0, result.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["stage"] for r in records] == ["layer 1 of 2: 64-16-64"] * 2 + [
        "layer 2 of 2: 16-4-16"
    ] * 2 + ["fine-tune"] * 3
    assert modelfile.load(str(out)).train_config.layerwise
    refused = invoke(["train", digits_csv, "-o", out, "--kind", "vae", "--layerwise"])
    assert refused.code == 2 and "--layerwise" in refused.stderr


def test_the_warm_up_schedule() -> None:
    config = TrainConfig(beta_warmup=4)
    assert [config.kl_weight(e) for e in range(1, 8)] == [0, 0.25, 0.5, 0.75, 1, 1, 1]
    assert TrainConfig().kl_weight(1) == 1.0


@pytest.mark.parametrize("tied", [False, True])  # the fast path and autograd
def test_warm_up_weighs_the_latent_loss_in_training_only(digits: np.ndarray, tied: bool) -> None:
    config = ModelConfig(kind="vae", n_inputs=64, hidden=(32,), latent=4, loss="mse", tied=tied)
    seen: list = []
    fitted = _train(digits[:300] / 16, config, TrainConfig(epochs=3, beta_warmup=2, seed=1), seen)
    for stats, weight in zip(seen, [0.0, 0.5, 1.0], strict=True):
        terms = stats.terms
        assert terms["loss"] == pytest.approx(terms["reconstruction"] + weight * terms["latent"])
    # Held out (eval mode), the loss is the full ELBO whatever the epoch's weight.
    model, x = fitted.model, torch.from_numpy(digits[:50] / 16).float()
    model.kl_weight = 0.0
    torch.manual_seed(0)
    loss, terms = model.eval()(x)
    assert loss.item() == pytest.approx((terms["reconstruction"] + terms["latent"]).item())
    loss, terms = model.train()(x)
    assert loss.item() == pytest.approx(terms["reconstruction"].item())


@pytest.mark.determinism
def test_warm_up_resumes_to_the_uninterrupted_run(tmp_path: Path, digits_csv: Path) -> None:
    whole, part = tmp_path / "whole.safetensors", tmp_path / "part.safetensors"
    args = ["--kind", "vae", "--beta-warmup", "3", "--seed", "1", "-q"]
    assert invoke(["train", digits_csv, "-o", whole, *args, "--epochs", "5"]).code == 0
    assert invoke(["train", digits_csv, "-o", part, *args, "--epochs", "2"]).code == 0
    resumed = invoke(["train", digits_csv, "-o", part, "--resume", part, "--epochs", "5", "-q"])
    assert resumed.code == 0, resumed.stderr
    assert part.read_bytes() == whole.read_bytes()


def test_active_units_count_latents_whose_mean_varies(digits: np.ndarray) -> None:
    config = ModelConfig(kind="vae", n_inputs=64, hidden=(32,), latent=4, loss="mse")
    fitted = _train(digits[:300], config, TrainConfig(epochs=2, seed=0), [])
    # Collapse two units by hand: their posterior mean no longer depends on the input.
    with torch.no_grad():
        fitted.model.encoder[-1].weight[:2] = 0.0
    evaluator = Evaluator(fitted)
    evaluator.update(digits[:300])
    report = evaluator.result()
    mu = fitted.encode(digits[:300])
    assert report["latent_units"] == 4
    assert report["active_units"] == int(np.sum(mu.var(0) > 0.01)) == 2


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--finetune-epochs", "3"], "--finetune-epochs: is for --layerwise"),
        (["--channels", "8"], "--channels: is for --arch conv"),
        (["--layerwise", "--hidden", "none"], "--layerwise: needs hidden layers to stack"),
        (["--sparsity-weight", "0.3"], "--sparsity-weight: is for --kind sparse"),
        (["--sparsity-target", "0.2"], "--sparsity-target: is for --kind sparse"),
        (["--beta", "0.5"], "--beta: is for --kind vae"),
        (
            ["--kind", "denoise", "--noise", "gaussian", "--dropout", "0.2"],
            "--dropout: is for --noise dropout",
        ),
        (["--noise", "dropout", "--noise-std", "0.3"], "--noise-std: is for --noise gaussian"),
    ],
)
def test_a_flag_another_flag_makes_meaningless_is_refused(
    tmp_path: Path, digits_csv: Path, flags: list[str], line: str
) -> None:
    """F3-15: these three ran with exit 0 and no word, the flag ignored."""
    out = tmp_path / "m.safetensors"
    result = invoke(["train", digits_csv, "-o", out, "--epochs", "1", "-q", *flags])
    assert result.code == 2 and result.stderr.startswith(f"aecli: error: {line}"), result.stderr
    assert not out.exists()


def test_a_signal_in_a_layerwise_stage_saves_the_stack_and_checkpoints_are_written(
    tmp_path: Path, digits_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F3-1: Ctrl-C, SIGTERM or SIGHUP during the stages saved nothing, and --checkpoint-every
    wrote nothing there. Stage 1 is epochs 1-3, stage 2 epochs 4-6: Ctrl-C in epoch 5."""
    saved = []
    real_save = modelfile.save

    def save(fitted: object, path: str, **kwargs: object) -> None:
        saved.append(dict(fitted.summary))  # type: ignore[attr-defined]
        real_save(fitted, path, **kwargs)  # type: ignore[arg-type]

    signal_at_epoch(monkeypatch, 5)
    monkeypatch.setattr(modelfile, "save", save)
    out = tmp_path / "m.safetensors"
    args = ["train", digits_csv, "-o", out, "--layerwise", "--hidden", "32,16", "--latent", "4",
            "--epochs", "3", "--checkpoint-every", "1"]  # fmt: skip
    result = invoke(args)
    assert result.code == 130, result.stderr
    assert result.stderr == (
        "aecli: interrupted during layer 2 of 3: 32-16-32, before the fine-tune (layer-wise "
        f"stages cannot be resumed); the model of epoch 1 was saved to {out}\n"
    )
    assert [s["stop"] for s in saved] == ["checkpoint"] * 4 + ["interrupted"]  # 3 + 1 epochs
    fitted = modelfile.load(str(out))
    assert fitted.summary["layerwise"]["stopped_in"] == "layer 2 of 3: 32-16-32"
    assert [s["stage"] for s in fitted.summary["layerwise"]["stages"]] == ["layer 1 of 3: 64-32-64"]
    assert invoke(["encode", out, digits_csv]).code == 0  # the stack as it stood, usable


def test_layerwise_counts_its_stages_epochs(tmp_path: Path, digits_csv: Path) -> None:
    """F3-18: the summary and info said "3 epochs" for 3 stages of 3 epochs and 3 more."""
    out = tmp_path / "m.safetensors"
    args = ["train", digits_csv, "-o", out, "--layerwise", "--hidden", "32,16", "--latent", "4",
            "--epochs", "3"]  # fmt: skip
    result = invoke(args)
    assert result.code == 0, result.stderr
    counted = "9 epochs in 3 layer-wise stages, then 3 epochs of the whole stack"
    assert f"for {counted} in " in result.stderr
    assert counted in invoke(["info", out]).text
