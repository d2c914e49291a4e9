"""The anomaly score's neighbour term and tail transform (aecli/neighbours.py), by formula."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from aecli import modelfile, neighbours
from tests.conftest import invoke


def test_tail_is_the_log_survival_of_the_interpolated_percentiles() -> None:
    grid = np.arange(1001, dtype=np.float64)  # percentiles 0, 1, ..., 1000: F(x) = x / 1001
    x = np.array([0.0, 250.5, 500.0, 990.0, 1000.0, 2000.0])
    got = neighbours.tail(x, grid)
    share = np.minimum(x, 1000) / 1001
    beyond = np.maximum(np.log(x.clip(1e-30) / 990), 0) / math.log(990 / 500)
    np.testing.assert_allclose(got, -np.log1p(-share) + beyond, rtol=1e-12)
    top = math.log(1001) + math.log(1000 / 990) / math.log(990 / 500)
    assert got[4] == pytest.approx(top)  # the largest percentile: finite
    assert np.all(np.diff(got) > 0)  # and rows beyond every training row stay ordered


def test_tied_percentiles_move_the_score_by_a_rounding_not_a_step() -> None:
    grid = np.concatenate([np.linspace(0, 1, 500), np.full(300, 2.0), np.linspace(3, 4, 201)])
    at, nudged = neighbours.tail(np.array([2.0, 2.0 * (1 + 1e-7)]), grid)
    assert abs(nudged - at) < 1e-2 * 300 / 1001  # 300 tied percentiles: a step would be 0.3
    below, above = neighbours.tail(np.array([1.99, 2.01]), grid)
    assert above - below > 0.3  # yet the tie still counts fully between its neighbours


def test_nearest_skips_the_row_itself_but_not_a_copy() -> None:
    reference = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0], [10.0, 0.0]])
    rows = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [10.0, 0.0]])
    got = neighbours.nearest(reference, rows).numpy()
    # [0, 0] meets itself, then [3, 4] at 5; [3, 4] meets itself and its copy: 0;
    # [1, 1] is new: sqrt 2 to [0, 0]; [10, 0] meets itself, then [3, 4] at sqrt(65)
    np.testing.assert_allclose(got, [5.0, 0.0, math.sqrt(2), math.sqrt(65)], rtol=1e-6)
    np.testing.assert_allclose(
        neighbours.nearest(reference[:1], torch.tensor([[3.0, 4.0]])).numpy(), [5.0]
    )


def test_the_reference_is_bounded_by_rows_and_values() -> None:
    assert neighbours.reference_size(500, 10) == 500
    assert neighbours.reference_size(50_000, 10) == neighbours.REFERENCE_ROWS
    rows = neighbours.reference_size(10_000, 500)
    assert rows * 500 <= neighbours.REFERENCE_VALUES and rows * 500 * 4 < 20 * 2**20


def test_a_wide_table_keeps_a_bounded_model_file(tmp_path: Path) -> None:
    data = tmp_path / "wide.npy"
    np.save(data, np.random.default_rng(0).normal(size=(2500, 1100)).astype(np.float32))
    model = tmp_path / "m.safetensors"
    assert invoke(["train", data, "-o", model, "--epochs", "1", "-q"]).code == 0
    stats = modelfile.load(str(model)).code_stats
    assert stats is not None and stats.reference is not None
    assert stats.reference.shape == (neighbours.REFERENCE_VALUES // 1100, 1100)
    assert model.stat().st_size < 20 * 2**20


def test_scores_are_calibrated_on_the_rows_trained_on(tmp_path: Path, table_csv: Path) -> None:
    """Rows scored against a reference that holds them would score low and --contamination
    would flag too many new rows: the training percentiles are of rows that skip themselves,
    as every scored row does, so the training file gets the share it asked for."""
    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--epochs", "5", "-q"]).code == 0
    result = invoke(["score", model, table_csv, "--contamination", "0.1"])
    flags = np.loadtxt(result.text.splitlines()[1:], delimiter=",")[:, 1]
    assert flags.mean() == pytest.approx(0.1, abs=0.02)


def test_one_row_at_a_time_scores_as_all_at_once(tmp_path: Path, table_csv: Path) -> None:
    from aecli.diagnostics import row_terms
    from aecli.io import read_table

    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--epochs", "3", "-q"]).code == 0
    fitted = modelfile.load(str(model))
    rows = read_table(str(table_csv)).values[:40]
    together = row_terms(fitted, rows)["score"]
    alone = np.concatenate([row_terms(fitted, rows[i : i + 1])["score"] for i in range(40)])
    np.testing.assert_array_equal(alone, together)


def test_the_neighbour_term_is_the_tables_not_the_seeds(tmp_path: Path, table_csv: Path) -> None:
    """Two seeds hold out different rows and train different networks, but the neighbour
    term involves no network: both files keep every row given (held-out ones too) and the
    same leave-one-out distances, so its part of the score cannot move with --seed."""
    from aecli.io import read_table

    kept = []
    for seed in ("0", "1"):
        model = tmp_path / f"m{seed}.safetensors"
        argv = ["train", table_csv, "-o", model, "--epochs", "2", "--seed", seed, "-q"]
        assert invoke(argv).code == 0
        stats = modelfile.load(str(model)).code_stats
        assert stats is not None and stats.reference is not None and stats.grids is not None
        kept.append((stats.reference, stats.grids["neighbour"], stats.grids["residual"]))
    rows = read_table(str(table_csv)).values
    assert len(kept[0][0]) == len(rows)  # the validation rows are in the reference too
    np.testing.assert_array_equal(kept[0][0], kept[1][0])
    np.testing.assert_array_equal(kept[0][1], kept[1][1])
    assert not np.array_equal(kept[0][2], kept[1][2])  # the networks' terms do differ
