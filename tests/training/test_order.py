"""The one order training takes rows in: held-out rows skipped, chunks fixed by the seed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from aecli import io, modelfile
from aecli.config import TrainConfig
from aecli.io import NpyRows
from aecli.training import _order as order
from aecli.training._distributed import World
from tests.conftest import invoke


def test_chunks_skip_held_out_rows_and_cover_the_rest(tmp_path: Path) -> None:
    values = np.arange(50, dtype=np.float32).reshape(25, 2)
    np.save(tmp_path / "v.npy", values)
    config = TrainConfig(val_fraction=0.2, chunk_rows=4, seed=1)
    source = order.OnDisk(NpyRows(str(tmp_path / "v.npy")))
    plan = order.Order.of(source.rows, config, 2)
    scaler = order.fit_scaler(source, replace(config, scale="none"), False)
    cpu = torch.device("cpu")
    streamed = order.TrainingRows(source, plan, scaler, config, cpu, World(), in_memory=False)
    seen = np.concatenate([c.numpy() for c in streamed.epoch(1)])
    val_rows = source.at(plan.held_out)
    assert plan.n_train == 20 and len(seen) == 20 and len(val_rows) == 5
    together = np.concatenate([seen, val_rows])
    assert sorted(together[:, 0].tolist()) == values[:, 0].tolist()
    first = [c.numpy()[0, 0] for c in streamed.epoch(1)]
    assert first == [c.numpy()[0, 0] for c in streamed.epoch(1)]  # order fixed by (seed, epoch)
    assert first != [c.numpy()[0, 0] for c in streamed.epoch(2)]
    # The same rows, held in memory, come in the same chunks, in the same order.
    memory = order.InMemory(io.Table(values, None, (2,)))
    loaded = order.TrainingRows(memory, plan, scaler, config, cpu, World(), in_memory=True)
    for a, b in zip(loaded.epoch(3), streamed.epoch(3), strict=True):
        assert torch.equal(a, b)


def test_held_out_rows_and_scale_sample_do_not_move_with_the_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two --seed values differ in the network only: the rows held out and the scale stay."""
    monkeypatch.setattr(order, "QUANTILE_ROWS", 50)  # so that the quantiles come from a sample
    values = np.random.default_rng(0).standard_normal((400, 3)).astype(np.float32)
    np.save(tmp_path / "v.npy", values)
    source = order.OnDisk(NpyRows(str(tmp_path / "v.npy")))
    configs = [TrainConfig(seed=s, val_fraction=0.25, scale="robust") for s in (0, 1)]
    plans = [order.Order.of(400, c, 3) for c in configs]
    assert len(plans[0].held_out) == 100
    np.testing.assert_array_equal(plans[0].held_out, plans[1].held_out)
    scalers = [order.fit_scaler(source, c, False) for c in configs]
    np.testing.assert_array_equal(scalers[0].offset, scalers[1].offset)
    np.testing.assert_array_equal(scalers[0].transform(values), scalers[1].transform(values))
    monkeypatch.setattr(order, "QUANTILE_ROWS", 100_000)
    every_row = order.fit_scaler(source, configs[0], False)
    assert not np.array_equal(every_row.offset, scalers[0].offset)  # the sample was a sample


def test_training_rows_all_alike_are_not_called_diverged(tmp_path: Path) -> None:
    """Where the held-out rows alone differ, the column means predict the training rows
    exactly; an error above that exact 0 is not a blown-up loss."""
    rows = np.tile(np.float32([1.0, 2.0, 3.0]), (20, 1))
    held_out = order.Order.of(len(rows), TrainConfig(), 3).held_out
    rows[held_out] += np.float32([[0.5, -1.0, 2.0]])
    np.save(tmp_path / "t.npy", rows)
    model = tmp_path / "m.safetensors"
    result = invoke(["train", tmp_path / "t.npy", "-o", model, "--epochs", "1", "-q"])
    assert result.code == 0 and "diverged" not in result.stderr, result.stderr
    assert "diverged" not in modelfile.load(str(model)).summary
