"""The anomaly score's neighbour terms, and the tail transform that lets its six terms add.

A row's distance to its nearest training row, each column in its own robust units
(``units``), is what lets k-nearest-neighbour detectors win when the training rows are
clean (issue 39): a row far from every training row is unusual whether or not the
autoencoder reconstructs it.
That distance over the neighbours' own (``relative``) is what lets the local outlier
factor win where normal rows come in clusters of different densities. The rows are kept
as a sample of at most ``REFERENCE_VALUES`` float32 values in the model file, or twice as
many float16 ones where that keeps more rows (with one float each, their reach), so the
file stays bounded (8 MB) whatever the table.

Terms with different units and tails add through ``tail``: each becomes how far into the
training rows' own distribution of that term it lies, ``-log(1 - F(x))`` with F read off
the stored percentiles (a row above 99% of training rows adds 4.6, a median one 0.7),
extended beyond the training maximum by how many decades past the 99th percentile it is,
so that extreme rows stay ordered. No term can dominate by its scale alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from aecli import density, discrete
from aecli.config import ROWS_SEED, Scale
from aecli.density import Density
from aecli.discrete import Discrete
from aecli.scaler import Scaler

if TYPE_CHECKING:
    from aecli.fitted import FittedModel

REFERENCE_ROWS = 10_000  # training rows kept for the neighbour term, at most
REFERENCE_VALUES = 2**21  # and at most this many float32 values (8 MB), or twice as many
HALF_MAX = 2.0**15  # float16 values (the same 8 MB) where every value is within this
# float16 keeps 11 significant bits: a distance summed over the hundreds of columns of a
# table too wide for float32 moves by about 1e-4 of itself, while the sample of rows it
# replaces cost the terms up to 0.009 AUROC (docs/anomaly.md). Narrower tables keep float32:
# there a near copy's distance is a few columns' rounding.


def reference_size(rows: int, width: int) -> int:
    """How many training rows the neighbour term keeps: all of them up to REFERENCE_ROWS,
    where they fit in REFERENCE_VALUES float32 values or twice as many float16 ones."""
    width = max(width, 1)
    kept = min(rows, REFERENCE_ROWS)
    if kept * width <= REFERENCE_VALUES:
        return max(1, kept)
    return max(1, min(kept, 2 * REFERENCE_VALUES // width))


def stored_half(rows: np.ndarray) -> bool:
    """Whether the reference ``rows`` are kept in float16: more values than float32 holds
    in the bound, all of them within HALF_MAX (a table's units are clipped at 5 spreads; a
    picture's raw 16-bit levels need not be, and keep float32's bound: ``as_stored``)."""
    return rows.size > REFERENCE_VALUES and bool((np.abs(rows) <= HALF_MAX).all())


# Squared distances within this share of the rows' squared norms are float32 rounding:
# the two rows are one (a training row meets itself in the reference).
SAME_ROW = 1e-5


@torch.inference_mode()
def nearest(reference: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of each row to its nearest reference row other than itself.

    A reference row equal to the row (up to float32 rounding) is the row itself when it is
    a training row, and for a new row equal to a training row it is that training row: the
    next nearest is taken in both cases, so a training row is scored as its leave-one-out
    neighbour distance, a new copy of it exactly so, and the score of a row stays a
    function of the row alone (``score`` of the training file gives what training saw).
    A copy among the other rows is still at distance 0. ``rows`` come in fixed-size
    blocks (FittedModel.blocks), so a row's distance does not depend on the chunking.
    """
    norms = rows.square().sum(1)
    ref_norms = reference.square().sum(1)
    # |r|^2 - 2 x.r in one product; |x|^2 is the same along a row, so it is added to the two
    # nearest only. Two passes of min find them several times faster than topk on a CPU.
    partial = torch.addmm(ref_norms[None, :], rows, reference.T, beta=1.0, alpha=-2.0)
    if reference.shape[0] == 1:
        return (partial[:, 0] + norms).clamp_min(0.0).sqrt()
    first, index = partial.min(1)
    partial.scatter_(1, index[:, None], float("inf"))
    second = partial.min(1).values
    first, second = (first + norms).clamp_min(0.0), (second + norms).clamp_min(0.0)
    scale = norms + ref_norms[index]
    return torch.where(first <= SAME_ROW * scale, second, first).sqrt()


RELATIVE_K = 10  # neighbours the relative term averages over (fewer in a smaller reference)
REACH_FLOOR = 0.01  # a reference row's reach is at least this share of the mean reach
TIE_SHARE = 1e-5  # squared distances this close to the k-th are tied with it


def relative_k(reference_rows: int) -> int:
    """How many neighbours the relative term averages: RELATIVE_K, or all the others."""
    return max(1, min(RELATIVE_K, reference_rows - 1))


@torch.inference_mode()
def neighbourhood(
    reference: torch.Tensor,
    rows: torch.Tensor,
    reach: torch.Tensor | None = None,
    *,
    graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Each row's ``relative_k`` nearest reference rows other than itself, as ``nearest``.

    Returns the distance to the nearest (``nearest``'s value), the mean distance to the
    k nearest, and, given the reference rows' ``reach``, the mean reach of the rows within
    the k-th distance. Every row tied at that distance counts (integer data ties often):
    which of them a partial sort keeps differs between torch and onnxruntime, so a term
    that read only the kept ones would differ too. A row just past it (within TIE_SHARE)
    counts in part, less the farther it is, so that a rounding of its distance moves the
    term by a rounding, not by a row (a step there had torch and onnxruntime differ by 0.03
    in a row's score). Rows with none of these beyond the k kept (almost all) average the
    kept ones' reach; only the others compare against every reference row, which ``graph``
    (the ONNX export, whose shapes cannot depend on the data) does for all.
    """
    norms = rows.square().sum(1)
    ref_norms = reference.square().sum(1)
    partial = torch.addmm(ref_norms[None, :], rows, reference.T, beta=1.0, alpha=-2.0)
    k = relative_k(reference.shape[0])
    values, index = partial.topk(min(k + 2, reference.shape[0]), dim=1, largest=False)
    first = (values[:, 0] + norms).clamp_min(0.0)
    itself = first <= SAME_ROW * (norms + ref_norms[index[:, 0]])
    columns = (torch.arange(k)[None, :] + itself.long()[:, None]).clamp_max(values.shape[1] - 1)
    kept = values.gather(1, columns)
    distances = (kept + norms[:, None]).clamp_min(0.0).sqrt()
    near, mean = distances[:, 0], distances.mean(1)
    if reach is None:
        return near, mean, None
    if reference.shape[0] == 1:
        return near, mean, reach.expand(rows.shape[0])
    last = kept[:, -1]
    width = TIE_SHARE * (last + norms).abs()
    threshold = last + width
    if graph:
        return near, mean, _reach_within(partial, last, width, index, itself, reach)
    around = reach[index.gather(1, columns)].mean(1)
    after = columns[:, -1] + 1  # the nearest row past the kept ones, where there is one
    beyond = values.gather(1, after.clamp_max(values.shape[1] - 1)[:, None])[:, 0]
    tied = ((after < values.shape[1]) & (beyond <= threshold)).nonzero()[:, 0]
    if len(tied):
        part = (partial[tied], last[tied], width[tied], index[tied], itself[tied], reach)
        around[tied] = _reach_within(*part)
    return near, mean, around


def _reach_within(
    partial: torch.Tensor,
    last: torch.Tensor,
    width: torch.Tensor,
    index: torch.Tensor,
    itself: torch.Tensor,
    reach: torch.Tensor,
) -> torch.Tensor:
    """The mean reach of the reference rows within each row's k-th distance (``last``), but
    itself, each row past it by up to ``width`` counting less the farther it is."""
    weight = (1.0 - (partial - last[:, None]) / width.clamp_min(1e-30)[:, None]).clamp(0.0, 1.0)
    inside = weight.to(reach.dtype)
    # the row itself is the nearest, so inside: it leaves before the sum (subtracting its
    # reach afterwards could cancel the others' to 0 in float32)
    first_column = index[:, :1]
    stays = inside.gather(1, first_column) * (1.0 - itself.to(reach.dtype))[:, None]
    inside = inside.scatter(1, first_column, stays)
    return (inside @ reach) / inside.sum(1).clamp_min(1.0)


def relative(mean_distance: torch.Tensor, around: torch.Tensor) -> torch.Tensor:
    """A row's mean distance to its k nearest over theirs to their own k nearest (``reach``).

    The idea of the local outlier factor (Breunig et al. 2000): 1 for a row as far from its
    neighbours as they are from theirs, whether the region is dense or sparse; large for a
    row off a dense cluster, even where a sparse cluster elsewhere makes that distance
    ordinary. Where normal rows come in clusters of different densities (embeddings of
    several classes), the plain distance misses such rows and this term does not.
    """
    return mean_distance / around


def reaches(mean_distance: torch.Tensor) -> torch.Tensor:
    """The reference rows' reach: their mean distance to their k nearest others, floored
    at a share of the mean, so that a row among copies (a table of repeated rows) does not
    make a row next to them look infinitely far for where it is."""
    floor = max(float(mean_distance.double().mean()) * REACH_FLOOR, 1e-12)
    return mean_distance.clamp_min(floor)


# Percentiles that tie (a term with few distinct values: neighbour distances of integer
# data) rise over this share of their value, not at a point: a term that float32 rounds
# differently (ONNX against torch) then moves the score by a rounding's worth, not a step.
TIE_WIDTH = 1e-4


def tail(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """How far into the training rows' distribution of a term each value lies.

    ``grid``: the term's G percentiles over the training rows, 0 to 100 in equal steps.
    F(x) interpolates linearly between them, from 0 at the minimum to (G - 1) / G at the
    maximum, so the score is continuous in x and ``-log(1 - F)`` stays finite (6.9 at
    most for 1001 percentiles); past the 99th percentile ``ln(x / q99) / ln(q99 / q50)``
    is added, so rows beyond every training row stay ordered. F is a sum of clamped ramps,
    one per gap between percentiles, which the ONNX graph repeats op for op.
    """
    grid64 = np.asarray(grid, dtype=np.float64)
    x = np.asarray(values, dtype=np.float64)
    low = grid64[:-1]
    width = np.maximum(np.diff(grid64), TIE_WIDTH * np.maximum(np.abs(low), 1e-30))
    share = ramp_sum(x, low, width) / len(grid64)
    q50, q99 = knees(grid64)
    beyond = np.maximum(np.log(np.maximum(x, 1e-30) / q99), 0.0) / math.log(q99 / q50)
    return -np.log1p(-share) + beyond


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


# How the terms add: the residual and the code are two views of the one autoencoder, the
# distance and the relative distance two views of the neighbours; each counts half
# (aecli's measurements: docs/anomaly.md).
# The density along the principal components (aecli/density.py) and the rarity of the
# values of discrete columns (aecli/discrete.py, on tables that have such columns) are
# the two views of the histograms, half each as well. Files written before a term keep
# the others, and files before the relative term count the distance whole.
WEIGHTS = {
    "residual": 0.5, "code": 0.5, "neighbour": 0.5, "relative": 0.5, "density": 0.5,
    "discrete": 0.5,
}  # fmt: skip
WEIGHTS_BEFORE_RELATIVE = {"residual": 0.5, "code": 0.5, "neighbour": 1.0}


def weights(grids: dict[str, np.ndarray]) -> dict[str, float]:
    """The terms a file's score adds, and their weights."""
    if "relative" not in grids:
        return WEIGHTS_BEFORE_RELATIVE
    return {name: weight for name, weight in WEIGHTS.items() if name in grids}


def combined(terms: dict[str, np.ndarray], grids: dict[str, np.ndarray]) -> np.ndarray:
    """The anomaly score: the weighted sum of each term's ``tail``."""
    return sum(weight * tail(terms[name], grids[name]) for name, weight in weights(grids).items())


def neighbour_rows(rows: int, width: int) -> np.ndarray:
    """Which of the rows given the neighbour term keeps: all of them up to its size.

    Chosen from every row ``train`` was given (held-out ones too) by a fixed seed, not by
    ``--seed``: the term involves no network, so nothing in it should move with the seed
    or with which rows the seed held out. Two seeds then differ only in the autoencoder's
    terms (issue 39: the seed alone moved a table's AUROC by up to 0.07).
    """
    size = reference_size(rows, width)
    return np.sort(np.random.default_rng(ROWS_SEED).choice(rows, size, replace=False))


def units(scaler: Scaler, row_shape: tuple[int, ...], rows: np.ndarray) -> Scaler | None:
    """The columns' own robust scale for the distances, where the model's units are not one.

    A distance across columns means something only where each column counts by its own
    spread, as every distance-based detector standardises first. The model's units are
    that already for tables it robust-scales, and for images, whose pixels share one
    unit. But a table that comes in [0, 1] keeps its units for the autoencoder (its
    targets), and there a column of shares in [0, 0.02] would count for nothing beside a
    flag: ``rows`` (the reference rows, in the model's units) then get the robust
    scaling ``--scale auto`` gives any other table, on top. So the neighbour and density
    terms of a table and of its min-max normalised copy are the same. None: no change.
    """
    if scaler.method == Scale.robust or len(row_shape) >= 2:
        return None
    return Scaler.fit(rows, Scale.robust)


def in_units(rows: torch.Tensor, scaler: Scaler | None) -> torch.Tensor:
    """Rows in the model's units, in the distances' units (``units``)."""
    return rows if scaler is None else torch.from_numpy(scaler.transform(rows.numpy()))


@dataclass
class Reference:
    """The neighbour terms' scaled rows, their reach, and their terms against each other."""

    rows: np.ndarray  # float32 [rows, inputs], in the distances' units
    reach: np.ndarray  # float32 [rows]
    terms: dict[str, np.ndarray]  # [rows]: neighbour, relative (leave-one-out), density, discrete
    density: Density  # the rows' principal components and their histograms
    discrete: Discrete | None  # their discrete columns' values, where they have such columns
    units: Scaler | None = None  # the distances' units, on the model's (``units``)


def as_stored(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The reference ``rows`` as the file will hold them, and which rows those are (None:
    all), so that training's terms are what ``score`` computes from the file.

    In float16 where ``stored_half`` says so; where the rows are too many for float32 and
    too large for float16 (a raw 16-bit picture), a sample that float32 holds in the bound,
    drawn by a fixed seed. The terms of the rows left out are then those of new rows.
    """
    if rows.numel() <= REFERENCE_VALUES:
        return rows, None
    if stored_half(rows.numpy()):
        return rows.half().float(), None
    rng = np.random.default_rng(ROWS_SEED + 4)
    kept = np.sort(rng.choice(len(rows), REFERENCE_VALUES // rows.shape[1], replace=False))
    index = torch.from_numpy(kept)
    return rows[index].contiguous(), index


def neighbour_reference(fitted: FittedModel, values: np.ndarray) -> Reference:
    """The neighbour terms' statistics from their raw rows (``neighbour_rows``).

    The rows' leave-one-out terms are the training distributions: a new row's distance to
    the reference is distributed as a reference row's to the others. The distances come
    from the model's fixed-size blocks, as ``row_terms`` computes them.
    """
    blocks = fitted.blocks(values)
    scaled = torch.cat(blocks.tensors)[: blocks.rows]
    own = units(fitted.scaler, fitted.row_shape, scaled.numpy())
    blocks.tensors = [in_units(block, own) for block in blocks.tensors]
    exact = torch.cat(blocks.tensors)[: blocks.rows].contiguous()
    reference, kept = as_stored(exact)
    means = torch.cat([neighbourhood(reference, block)[1] for block in blocks.tensors])
    reach = reaches(means[: blocks.rows] if kept is None else means[kept])
    parts = [neighbourhood(reference, block, reach) for block in blocks.tensors]
    near, mean, around = (torch.cat(part)[: blocks.rows] for part in zip(*parts))
    terms = {"neighbour": near.numpy(), "relative": relative(mean, around).numpy()}
    fitted_density = density.fit(exact.numpy())  # the rows' own components, not rounded
    terms["density"] = fitted_density.term(exact.numpy())
    counted = discrete.fit(values)
    if counted is not None:
        terms["discrete"] = counted.term(values)
    return Reference(reference.numpy(), reach.numpy(), terms, fitted_density, counted, own)
