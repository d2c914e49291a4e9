"""The weights a run keeps are the moving average of its epochs' weights (_average.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from aecli import modelfile
from aecli.config import ModelConfig, TrainConfig
from aecli.errors import ModelFileError
from aecli.models import build_model
from aecli.training._average import DECAY, decay
from aecli.training._loop import evaluate_loss, fit
from tests.conftest import invoke


def test_decay_warms_up_to_its_cap() -> None:
    assert decay(1) == pytest.approx(2 / 11)
    assert decay(50) == pytest.approx(51 / 60)
    assert decay(80) == DECAY and decay(1000) == DECAY


def _run(epochs: int, **train: Any) -> tuple[torch.nn.Module, Any, list[dict[str, torch.Tensor]]]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_inputs=6, hidden=(5,), latent=2))
    rows, val = torch.rand(64, 6), torch.rand(16, 6)
    seen: list[dict[str, torch.Tensor]] = []

    def keep(stats: Any) -> None:
        seen.append({k: v.detach().clone() for k, v in model.named_parameters()})

    config = TrainConfig(epochs=epochs, batch_size=16, **train)
    history = fit(model, rows, val, config, keep)
    return model, history, seen


def test_the_kept_weights_are_the_moving_average_of_the_epochs() -> None:
    model, history, seen = _run(6)
    state = history.optimizer_state
    assert state.averaged == 6
    for name, weight in model.named_parameters():
        last = state.moments[f"{name}.last"]  # the last step's weights, kept to resume
        steps = [epoch[name] for epoch in seen[:-1]] + [last]
        expected = steps[0].double()
        for epoch, weights in enumerate(steps[1:], start=2):
            expected = decay(epoch) * expected + (1 - decay(epoch)) * weights.double()
        torch.testing.assert_close(weight.double(), expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(seen[-1][name], weight)  # the last epoch reports the kept weights
        assert not torch.equal(weight, last)
        assert f"{name}.average" not in state.moments  # the model holds it


def test_the_reported_val_loss_is_that_of_the_kept_weights() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_inputs=6, hidden=(5,), latent=2))
    rows, val = torch.rand(64, 6), torch.rand(16, 6)
    history = fit(model, rows, val, TrainConfig(epochs=4, batch_size=16))
    assert history.last.val_loss == pytest.approx(evaluate_loss(model, val, 16), rel=1e-6)


def test_early_stopping_keeps_its_best_epoch_unaveraged() -> None:
    model, history, seen = _run(8, early_stopping=2)
    kept = history.best_epoch or history.last.epoch
    for name, weight in model.named_parameters():
        assert torch.equal(weight, seen[kept - 1][name])
    assert history.optimizer_state.averaged == 0


def test_a_file_with_misshapen_last_weights_is_refused(tmp_path: Path, table_csv: Path) -> None:
    out = tmp_path / "m.safetensors"
    result = invoke(["train", table_csv, "-o", out, "--epochs", "3", "--seed", "0", "-q"])
    assert result.code == 0, result.stderr
    fitted = modelfile.load(str(out))
    assert fitted.optimizer_state is not None and fitted.optimizer_state.averaged == 3
    name = next(n for n, _ in fitted.model.named_parameters())
    assert f"{name}.average" not in fitted.optimizer_state.moments  # the model holds it
    fitted.optimizer_state.moments[f"{name}.last"] = torch.zeros(1)
    bad = tmp_path / "bad.safetensors"  # save checks what load would refuse, and writes nothing
    with pytest.raises(ModelFileError, match=r"optimizer state for .* misshapen"):
        modelfile.save(fitted, str(bad))
    assert not bad.exists()
