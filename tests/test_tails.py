"""The tail transform by which the anomaly score's terms add (aecli/tails.py), by formula."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aecli import tails


def test_tail_is_the_log_survival_of_the_interpolated_percentiles() -> None:
    grid = np.arange(1001, dtype=np.float64)  # percentiles 0, 1, ..., 1000: F(x) = x / 1001
    x = np.array([0.0, 250.5, 500.0, 990.0, 1000.0, 2000.0])
    got = tails.tail(x, grid)
    share = np.minimum(x, 1000) / 1001
    beyond = np.maximum(np.log(x.clip(1e-30) / 990), 0) / math.log(990 / 500)
    np.testing.assert_allclose(got, -np.log1p(-share) + beyond, rtol=1e-12)
    top = math.log(1001) + math.log(1000 / 990) / math.log(990 / 500)
    assert got[4] == pytest.approx(top)  # the largest percentile: finite
    assert np.all(np.diff(got) > 0)  # and rows beyond every training row stay ordered


def test_tied_percentiles_move_the_score_by_a_rounding_not_a_step() -> None:
    grid = np.concatenate([np.linspace(0, 1, 500), np.full(300, 2.0), np.linspace(3, 4, 201)])
    at, nudged = tails.tail(np.array([2.0, 2.0 * (1 + 1e-7)]), grid)
    assert abs(nudged - at) < 1e-2 * 300 / 1001  # 300 tied percentiles: a step would be 0.3
    below, above = tails.tail(np.array([1.99, 2.01]), grid)
    assert above - below > 0.3  # yet the tie still counts fully between its neighbours


def test_ramp_sum_is_the_sum_of_every_ramp() -> None:
    """The binary-searched sum against the plain one (every gap for every value), on grids
    with ties, zeros and negative values, at and between percentiles, and off both ends."""
    rng = np.random.default_rng(0)
    grids = [
        np.sort(rng.gamma(2.0, size=1001)),
        np.concatenate([np.zeros(400), np.sort(rng.exponential(size=601))]),  # a tied floor
        np.concatenate([np.linspace(-3, 1, 300), np.full(400, 2.0), np.linspace(2, 9, 301)]),
        np.round(np.sort(rng.normal(size=1001)) * 4) / 4,  # many small ties
        np.full(1001, 5.0),  # one value only
    ]
    for grid in grids:
        low = grid[:-1]
        width = np.maximum(np.diff(grid), tails.TIE_WIDTH * np.maximum(np.abs(low), 1e-30))
        x = np.concatenate([
            rng.choice(grid, 300), rng.choice(grid, 300) * (1 + rng.normal(0, 1e-5, 300)),
            rng.uniform(grid.min() - 1, grid.max() + 1, 300),
            [grid.min() - 10, grid.max() + 10, np.inf, -np.inf, 0.0, -0.0, np.nan],
        ])  # fmt: skip
        with np.errstate(invalid="ignore"):
            plain = np.clip((x[:, None] - low) / width, 0.0, 1.0).sum(1)
        got = tails.ramp_sum(x, low, width)
        np.testing.assert_allclose(got, plain, rtol=1e-12, atol=1e-9, equal_nan=True)
        assert np.isnan(got[-1]) and got[-5] == len(low) and got[-4] == 0.0
