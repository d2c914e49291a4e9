"""The tail transform by which the anomaly score's terms add (aecli/tails.py), by formula."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from aecli import tails
from tests.conftest import invoke


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


def test_span_is_the_larger_of_the_middles_and_the_tops_log_rise() -> None:
    """Format 14: the tail grows by one per span past q99, the span the larger of
    ln(q99 / q50) and ln(max / q99)."""
    grid = np.arange(1, 1002, dtype=np.float64)  # q50 501, q99 991, max 1001
    assert tails.span(grid) == pytest.approx(math.log(991 / 501))
    heavy = grid.copy()
    heavy[-5:] = [2e3, 5e3, 1e4, 5e4, 1e5]  # the top 0.5% far above the rest
    assert tails.span(heavy) == pytest.approx(math.log(1e5 / 991))
    x = np.array([991.0, 1e5, 1e6])
    got = tails.tail(x, heavy, None, tails.span(heavy))
    share = tails.below(x, heavy)
    np.testing.assert_allclose(
        got - (-np.log1p(-share)), [0.0, 1.0, 1.0 + math.log(10) / math.log(1e5 / 991)]
    )


def test_no_training_value_adds_more_than_one_past_its_share() -> None:
    """Where 99% of the training rows hold one value (a flag that 0.5% of them raise),
    ln(q99 / q50) is 0 to rounding: by it, the rows that raise the flag, training rows
    among them, added tens of thousands past F. By the span, at most 1."""
    grid = np.concatenate([np.full(995, 0.0046), np.full(6, 2.35)])
    at_flag = np.array([2.35])
    share = tails.below(at_flag, grid)
    before = tails.tail(at_flag, grid) + np.log1p(-share)
    assert before[0] > 1e4  # the old reading
    now = tails.tail(at_flag, grid, None, tails.span(grid)) + np.log1p(-share)
    assert now[0] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    for grid in (np.sort(rng.gamma(2.0, size=1001)), np.sort(rng.pareto(1.0, size=1001)) + 1):
        past = tails.tail(grid, grid, None, tails.span(grid)) + np.log1p(-tails.below(grid, grid))
        assert past.max() <= 1.0 + 1e-9  # any grid: the maximum adds 1 at most


def test_a_term_without_spread_above_its_median_adds_at_most_one_past_it() -> None:
    """Training values tied above the median (within rounding) give no rate of growth:
    the span is one that no float climbs by more than 1, and the order is kept."""
    for grid in (np.zeros(1001), np.full(1001, 3.2), np.linspace(3.2, 3.2 * 1.0005, 1001)):
        assert tails.span(grid) == tails.SPAN_WITHOUT_SPREAD
        x = np.array([float(grid[-1]), 0.01, 3.3, 1e3, 3e38])
        past = tails.tail(x, grid, None, tails.span(grid)) + np.log1p(-tails.below(x, grid))
        assert np.all(past <= 1.0) and np.all(np.diff(past[1:]) >= 0)
    spread = 3.2 * (1 + np.linspace(0, 0.004, 1001))  # q99 0.2% above q50: spread, if small
    q50, q99 = tails.knees(spread)
    assert tails.span(spread) == pytest.approx(math.log(q99 / q50)) and q99 / q50 > 1.0019


def test_a_row_off_a_table_of_duplicates_scores_as_rare_not_as_a_million(
    tmp_path: Path,
) -> None:
    """Every training row has copies, so every distance to the nearest other row is 0 and
    every Mahalanobis distance of five distinct rows is one value. A row a hundredth of a
    spread off them scored 800,000 and one far off 1,200,000; now the training rows stay
    low, the near rows beyond them and the far rows beyond those, on one scale."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(5, 4)).astype(np.float32)
    data, model, probe = tmp_path / "t.npy", tmp_path / "m.safetensors", tmp_path / "p.npy"
    np.save(data, np.repeat(base, 40, axis=0))
    np.save(probe, np.vstack([base, base + 0.01, rng.normal(size=(5, 4)) * 3 + 6]))
    assert invoke(["train", data, "-o", model, "--epochs", "5", "--seed", "0", "-q"]).code == 0
    result = invoke(["score", model, probe])
    assert result.code == 0, result.stderr
    scores = np.array([float(v) for v in result.stdout.split()[1:]])
    training, near, far = scores[:5], scores[5:10], scores[10:]
    assert training.max() < near.min() and near.max() < far.min()
    assert far.max() < 50  # the terms' own scale: each count at most 7.9 (31 at most here)


def test_each_count_is_raised_to_its_power_before_the_weighted_sum() -> None:
    """Format 16: a term adds its weight times (its tail above its floor, plus its lower tail
    at its share) to its power; a file without powers adds the counts as they are."""
    grid = np.arange(1001, dtype=np.float64)
    names = ("residual", "code", "neighbour", "relative")
    grids = dict.fromkeys(names, grid)
    x = np.array([10.0, 500.0, 995.0, 5000.0])
    terms = dict.fromkeys(names, x)
    floors, lowers = {"residual": tails.MEDIAN, "code": tails.MEDIAN}, {"code": 0.5}
    spans = {name: tails.span(grid) for name in names}
    powers = dict.fromkeys(names, 1.25)
    plain = tails.parts(terms, grids, floors, lowers, spans)
    raised = tails.parts(terms, grids, floors, lowers, spans, powers)
    upper = tails.tail(x, grid, None, spans["code"])
    counts = {
        "residual": np.maximum(upper - tails.MEDIAN, 0),
        "code": np.maximum(upper - tails.MEDIAN, 0) + 0.5 * tails.lower_tail(x, grid),
        "neighbour": upper,
        "relative": upper,
    }
    weights = tails.WEIGHTS_BEFORE_SAMPLED
    for name, count in counts.items():
        np.testing.assert_allclose(plain[name], weights[name] * count, rtol=1e-12)
        np.testing.assert_allclose(raised[name], weights[name] * count**1.25, rtol=1e-12)
    assert raised["neighbour"][-1] > plain["neighbour"][-1]  # a count past 1 weighs more
    assert raised["neighbour"][0] < plain["neighbour"][0]  # and one under 1 less


def test_the_percentiles_are_numpys_quantiles_bit_for_bit() -> None:
    """The grid every term is read against: numpy's own steps without its partition."""
    from aecli.diagnostics import QUANTILE_GRID, sorted_quantiles

    rng = np.random.default_rng(5)
    samples = [
        rng.normal(size=6000), rng.exponential(size=997) * 1e18, np.round(rng.normal(size=50)),
        rng.standard_cauchy(size=10_000), np.full(7, 2.5), np.array([1.0, 3.0]), np.array([4.0]),
    ]  # fmt: skip
    for values in samples:
        ordered = np.sort(values)
        np.testing.assert_array_equal(
            sorted_quantiles(ordered), np.quantile(ordered, QUANTILE_GRID)
        )
