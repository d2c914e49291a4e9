"""The tail transform that lets the anomaly score's terms add, and their weights.

Terms with different units and tails add through ``tail``: each becomes how far into the
training rows' own distribution of that term it lies, ``-log(1 - F(x))`` with F read off
the stored percentiles (a row above 99% of training rows adds 4.6, a median one 0.7),
extended beyond the training maximum by how many decades past the 99th percentile it is,
so that extreme rows stay ordered. No term can dominate by its scale alone.
"""

from __future__ import annotations

import math

import numpy as np

# Percentiles that tie (a term with few distinct values: neighbour distances of integer
# data) rise over this share of their value, not at a point: a term that float32 rounds
# differently (ONNX against torch) then moves the score by a rounding's worth, not a step.
TIE_WIDTH = 1e-4


def tail(
    values: np.ndarray,
    grid: np.ndarray,
    share: np.ndarray | None = None,
    span: float | None = None,
) -> np.ndarray:
    """How far into the training rows' distribution of a term each value lies.

    ``grid``: the term's G percentiles over the training rows, 0 to 100 in equal steps.
    F(x) interpolates linearly between them, from 0 at the minimum to (G - 1) / G at the
    maximum, so the score is continuous in x and ``-log(1 - F)`` stays finite (6.9 at
    most for 1001 percentiles); past the 99th percentile ``ln(x / q99) / span`` is added,
    so rows beyond every training row stay ordered. F is a sum of clamped ramps, one per
    gap between percentiles, which the ONNX graph repeats op for op. ``share``: F(x),
    where the caller has it (``below``). ``span``: the file's ``span.*`` (``spans``);
    ln(q99 / q50) where it has none, as in files before format 14.
    """
    grid64 = np.asarray(grid, dtype=np.float64)
    x = np.asarray(values, dtype=np.float64)
    share = below(x, grid64) if share is None else share
    q50, q99 = knees(grid64)
    span = math.log(q99 / q50) if span is None else span
    beyond = np.maximum(np.log(np.maximum(x, 1e-30) / q99), 0.0) / span
    return -np.log1p(-share) + beyond


def below(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """F(x): the share of training rows below each value, as ``tail`` reads it."""
    grid64 = np.asarray(grid, dtype=np.float64)
    low = grid64[:-1]
    width = np.maximum(np.diff(grid64), TIE_WIDTH * np.maximum(np.abs(low), 1e-30))
    return ramp_sum(np.asarray(values, dtype=np.float64), low, width) / len(grid64)


def lower_tail(values: np.ndarray, grid: np.ndarray, share: np.ndarray | None = None) -> np.ndarray:
    """How far into the lower half of the training rows' distribution each value lies:
    ``-log(2 F(x))``, 0 from the median up, log(G / 2) (6.2) at or below the minimum. The
    mirror of ``tail`` above the median (``tail - ln 2`` there is ``-log(2 (1 - F))``).
    ``share``: F(x), where the caller has it."""
    share = below(values, grid) if share is None else share
    return np.maximum(-np.log(2.0 * np.maximum(share, 1.0 / len(grid))), 0.0)


# Ramps that end this share of x below it are whole: far beyond the float64 rounding of
# (x - low) / width, so the formula would give exactly 1 for them too.
WHOLE_BELOW = 1e-9


def ramp_sum(x: np.ndarray, low: np.ndarray, width: np.ndarray) -> np.ndarray:
    """The sum over gaps of ``clip((x - low) / width, 0, 1)``, without a pass over every gap.

    A ramp that starts at or above x is 0 and one that ends well below it is 1, so for
    each x two binary searches count them (the starts rise, and the ends rise with them),
    and only the ramps x lies on are evaluated, by the same formula: its own gap, and
    where percentiles tie, the widened ramps of the tie. For 200,000 values against 1,001
    percentiles, every ramp of every value took 1.1 s; this takes 0.05 s.
    """
    started = np.searchsorted(low, x, side="left")  # ramps with low < x: the rest are 0
    ends = np.maximum.accumulate(low + width)  # sorted though rounding jiggles an end
    slack = WHOLE_BELOW * np.clip(np.abs(x), 1e-300, 1e300)  # finite: inf - slack is inf
    whole = np.minimum(np.searchsorted(ends, x - slack, side="left"), started)
    total = whole.astype(np.float64)
    pending = np.flatnonzero(started > whole)
    offset = 0
    while len(pending):  # one partial ramp at a time: most rows have one, ties a few more
        gap = whole[pending] + offset
        total[pending] += np.clip((x[pending] - low[gap]) / width[gap], 0.0, 1.0)
        offset += 1
        pending = pending[started[pending] > whole[pending] + offset]
    total[np.isnan(x)] = np.nan  # as the ramps give: an undefined term stays undefined
    return total


def knees(grid: np.ndarray) -> tuple[float, float]:
    """The median and the 99th percentile of a grid, kept apart and positive."""
    q50 = max(float(grid[(len(grid) - 1) // 2]), 1e-30)
    q99 = max(float(grid[round(0.99 * (len(grid) - 1))]), q50 * 1.0001)
    return q50, q99


# A term whose training values rise by under a tenth of a percent from the median to the
# 99th percentile, and again to the maximum (rounding, not spread: every distance to the
# nearest other row 0 on a table whose rows all come in duplicates, one Mahalanobis distance
# for every row of a table of five distinct rows) says nothing of how fast rarity grows
# past them: by its rise (1e-4, the tie's width) a row 0.01 off every training row scored
# 800,000. Such a term gets a span that no float can climb by more than 1 (ln(3.4e38 /
# 1e-30) is 158): a row beyond every training row scores as beyond them all, still
# ordered, and the other terms tell it apart from the rest. The smallest rise on real
# tables is 0.02 (aecli's measurements: docs/anomaly.md), twenty times this bound.
TIED_RISE = 1e-3
SPAN_WITHOUT_SPREAD = 160.0


def span(grid: np.ndarray) -> float:
    """The log-span over which a term's tail grows by one beyond its 99th percentile (format
    14, stored as ``span.*``): the larger of ln(q99 / q50) and ln(max / q99).

    ln(q99 / q50) alone is how fast the middle of the training rows' distribution rises, and
    where 99% of them hold one value (a flag that 0.5% of rows raise) it is 0 to rounding:
    then the rows that hold the other value, training rows among them, added ln(max / q99) /
    1e-4, tens of thousands, and outscored a row 50 spreads off in every column. With the
    larger of the two, no training row adds more than 1 past its F, and a new row gains one
    per span beyond the training maximum (aecli's measurements: docs/anomaly.md). Where
    both rises are rounding (``TIED_RISE``), ``SPAN_WITHOUT_SPREAD``.
    """
    grid64 = np.asarray(grid, dtype=np.float64)
    q50, q99 = knees(grid64)
    rise = max(math.log(q99 / q50), math.log(max(float(grid64[-1]), q99) / q99))
    return rise if rise >= TIED_RISE else SPAN_WITHOUT_SPREAD


# How the terms add: the residual and the code are two views of the one autoencoder, the
# distance and the relative distance two views of the neighbours; each counts half
# (aecli's measurements: docs/anomaly.md).
# The density along the principal components (aecli/density.py) and the rarity of the
# values of discrete columns (aecli/discrete.py, on tables that have such columns) are
# the two views of the histograms, half each as well. Files written before a term keep
# the others, and files before the relative term count the distance whole.
# The distance to the nearest row is read two ways (format 10), a quarter each: against
# every reference row, and against small samples of them (aecli/sampled.py), which a group
# of anomalies among the training rows cannot fill with its own members.
# The density is read two ways too (format 15), a quarter each: along the principal
# components, and along the columns themselves (``density.fit_columns``: HBOS).
WEIGHTS = {
    "residual": 0.5, "code": 0.5, "neighbour": 0.25, "sampled": 0.25, "relative": 0.5,
    "density": 0.25, "marginal": 0.25, "discrete": 0.5,
}  # fmt: skip
WEIGHTS_BEFORE_MARGINAL = {**WEIGHTS, "density": 0.5}
WEIGHTS_BEFORE_SAMPLED = {**WEIGHTS_BEFORE_MARGINAL, "neighbour": 0.5}
WEIGHTS_BEFORE_RELATIVE = {"residual": 0.5, "code": 0.5, "neighbour": 1.0}

# Where a term starts to count: the autoencoder's two terms only above their training median
# (format 8; docs/anomaly.md). Both are distances from a Gaussian fitted to the training rows'
# codes and residuals, and a row nearer its centre than the median row is no more normal for
# it: codes of several kinds of rows may leave the centre empty, and an autoencoder
# reconstructs some unusual rows unusually well. Below their medians the other terms still
# count, since what they measure there is evidence: a training row close by, or a value many
# training rows hold. ln 2 is the tail at the median, as float32 stores it.
MEDIAN = float(np.float32(math.log(2.0)))
FLOORS = {"residual": MEDIAN, "code": MEDIAN}

# A term whose lower tail counts too, and at what share of its weight (format 9;
# docs/anomaly.md): the code. A row whose code lies nearer the centre of the training codes
# than almost every training row's is as rare, by the training rows' own distances, as one
# beyond them (the typicality test of Nalisnick et al. 2019): an anomaly that sits among the
# kinds of normal rows, not beyond them, may be coded there. It counts half the upper tail:
# anomalies lie beyond the training codes far more often than inside them, and counted whole
# the lower tail costs the tables where they lie beyond.
LOWER = {"code": 0.5}

# A term read two ways, where the rarer reading counts (format 12; docs/anomaly.md): the code,
# by one Gaussian of the training codes and by a mixture of a few (aecli/mixture.py). Where
# the rows are of several kinds the one Gaussian's centre can lie between them; where a group
# of anomalies among the training rows has a component of the mixture, the one Gaussian still
# sees it beyond the rest.
READINGS = {"code": "mixture"}

# The power each term's count is raised to before the weighted sum (format 16; docs/anomaly.md).
# The terms are views of a few things (two of the autoencoder, three of the neighbours, three of
# the histograms), and a row at the edge of the normal rows raises the views of one thing
# together, a little each; summed as they are, seven such rises weigh what one view far out
# does. Raised to 1.25 first, a count of 5 weighs 7.5 and one of 1 still 1: one strong signal
# (the zeros' rare ink in optdigits, read by the discrete term alone) counts for more than the
# same total spread thinly over correlated views. A step from the sum (1) toward the largest
# term (infinity, which measured worse: docs/anomaly.md).
POWER = 1.25


def weights(grids: dict[str, np.ndarray]) -> dict[str, float]:
    """The terms a file's score adds, and their weights."""
    if "relative" not in grids:
        return WEIGHTS_BEFORE_RELATIVE
    table = WEIGHTS if "marginal" in grids else WEIGHTS_BEFORE_MARGINAL
    table = table if "sampled" in grids else WEIGHTS_BEFORE_SAMPLED
    return {name: weight for name, weight in table.items() if name in grids}


def parts(
    terms: dict[str, np.ndarray],
    grids: dict[str, np.ndarray],
    floors: dict[str, float] | None = None,
    lowers: dict[str, float] | None = None,
    spans: dict[str, float] | None = None,
    powers: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """What each term adds to the anomaly score, which is their sum: its weight times its
    count raised to the file's ``power.*`` (none before format 16: 1), the count its
    ``tail`` above its floor (a file's ``floor.*``; none, as in files before format 8: all
    of it), plus its ``lower_tail`` at the file's share (``lower.*``; none before format
    9), each tail past its 99th percentile by the file's ``span.*`` (``span``; none before
    format 14). ``score --terms`` writes them, so that a user sees why a row scored high:
    far from every training row, unlike the rows the autoencoder learnt, or holding values
    few training rows hold."""
    floors, lowers, spans, powers = floors or {}, lowers or {}, spans or {}, powers or {}
    added = {}
    for name, weight in weights(grids).items():
        values, grid = terms[name], grids[name]
        share = below(values, grid)  # F(x), once for both tails
        upper = tail(values, grid, share, spans.get(name))
        other = READINGS.get(name)
        if other in grids:  # and its second reading (format 12): the rarer counts
            upper = np.maximum(upper, tail(terms[other], grids[other], None, spans.get(other)))
        count = counted(upper, floors.get(name, 0.0))
        if name in lowers:  # and its lower tail, at its share (``lower.*``, format 9)
            count = count + lowers[name] * lower_tail(values, grid, share)
        added[name] = weight * raised(count, powers.get(name, 1.0))
    return added


def raised(count: np.ndarray, power: float) -> np.ndarray:
    """A term's count (never negative) to its power; as it is where the power is 1."""
    return count**power if power != 1.0 else count


def counted(tails: np.ndarray, floor: float) -> np.ndarray:
    """The part of a term's tail that the score adds: what lies above ``floor``."""
    return np.maximum(tails - floor, 0.0) if floor > 0 else tails
