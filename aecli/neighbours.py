"""The anomaly score's neighbour terms.

A row's distance to its nearest training row, each column in its own robust units
(``units``), is what lets k-nearest-neighbour detectors win when the training rows are
clean (issue 39): a row far from every training row is unusual whether or not the
autoencoder reconstructs it.
That distance over the neighbours' own (``relative``) is what lets the local outlier
factor win where normal rows come in clusters of different densities. The rows are kept
as a sample of at most ``REFERENCE_VALUES`` float32 values in the model file, or twice as
many float16 ones where that keeps more rows (with one float each, their reach), so the
file stays bounded (8 MB) whatever the table. How the terms add is aecli/tails.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from aecli import density, discrete, sampled
from aecli.config import ROWS_SEED, Scale
from aecli.copies import apart_from_copies
from aecli.density import Density
from aecli.discrete import Discrete
from aecli.distances import partial_squared
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
    partial = partial_squared(reference, rows, ref_norms)
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


@dataclass
class Nearest:
    """A block of rows' nearest reference rows: what the relative term's reach needs later.

    ``neighbour_reference`` finds every block's before the reach exists (it is the
    reference rows' own mean distance), so ``partial`` is dropped there and recomputed
    for a block only where a tie needs every reference row: the same block shape gives
    the same roundings, so training's terms are what ``score`` computes in one pass.
    """

    rows: torch.Tensor  # [n, inputs]
    norms: torch.Tensor  # [n]: the rows' squared norms
    partial: torch.Tensor | None  # [n, reference rows]: squared distances less the norms
    values: torch.Tensor  # [n, k + 2]: the smallest partial ones, ascending
    index: torch.Tensor  # [n, k + 2]: their reference rows
    itself: torch.Tensor  # [n]: whether the first is the row itself
    columns: torch.Tensor  # [n, k]: which of values are the k nearest others
    near: torch.Tensor  # [n]: the distance to the nearest other
    mean: torch.Tensor  # [n]: the mean distance to the k nearest others


@torch.inference_mode()
def nearest_k(
    reference: torch.Tensor, rows: torch.Tensor, ref_norms: torch.Tensor | None = None
) -> Nearest:
    """Each row's ``relative_k`` nearest reference rows other than itself, as ``nearest``
    (``ref_norms``: the reference rows' squared norms, where the caller keeps them)."""
    norms = rows.square().sum(1)
    ref_norms = reference.square().sum(1) if ref_norms is None else ref_norms
    partial = partial_squared(reference, rows, ref_norms)
    k = relative_k(reference.shape[0])
    values, index = partial.topk(min(k + 2, reference.shape[0]), dim=1, largest=False)
    first = (values[:, 0] + norms).clamp_min(0.0)
    itself = first <= SAME_ROW * (norms + ref_norms[index[:, 0]])
    columns = (torch.arange(k)[None, :] + itself.long()[:, None]).clamp_max(values.shape[1] - 1)
    distances = (values.gather(1, columns) + norms[:, None]).clamp_min(0.0).sqrt()
    near, mean = distances[:, 0], distances.mean(1)
    return Nearest(rows, norms, partial, values, index, itself, columns, near, mean)


@torch.inference_mode()
def neighbour_terms(
    reference: torch.Tensor,
    rows: torch.Tensor,
    reach: torch.Tensor,
    samples: torch.Tensor | None = None,
    *,
    graph: bool = False,
    ref_norms: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The rows' neighbour terms: ``neighbour``, ``relative`` and, given the reference's
    ``samples`` (format 10), ``sampled`` (aecli/sampled.py)."""
    found = nearest_k(reference, rows, ref_norms)
    found_terms = {"neighbour": found.near}
    if samples is not None:
        found_terms["sampled"] = sampled_term(found, samples, graph=graph)
    around = reach_around(reference, found, reach, graph=graph)
    return {**found_terms, "relative": relative(found.mean, around)}


def sampled_term(found: Nearest, samples: torch.Tensor, *, graph: bool = False) -> torch.Tensor:
    """aecli/sampled.py's term for rows whose nearest reference rows ``found`` holds, from
    their distances to every reference row (before ``neighbour_reference`` drops them)."""
    assert found.partial is not None
    nearest_row = found.index[:, 0]
    parts = (found.partial, found.norms, samples, nearest_row, found.itself, found.near)
    return sampled.term(*parts, graph=graph)


@torch.inference_mode()
def reach_around(
    reference: torch.Tensor, found: Nearest, reach: torch.Tensor, *, graph: bool = False
) -> torch.Tensor:
    """The mean reach of the reference rows within each row's k-th distance, but itself.

    Every row tied at that distance counts (integer data ties often): which of them a
    partial sort keeps differs between torch and onnxruntime, so a term that read only the
    kept ones would differ too. A row just past it (within TIE_SHARE) counts in part, less
    the farther it is, so that a rounding of its distance moves the term by a rounding, not
    by a row (a step there had torch and onnxruntime differ by 0.03 in a row's score). Rows
    with none of these beyond the k kept (almost all) average the kept ones' reach; only
    the others compare against every reference row, which ``graph`` (the ONNX export,
    whose shapes cannot depend on the data) does for all.
    """
    if reference.shape[0] == 1:
        return reach.expand(found.rows.shape[0])
    values, index, columns = found.values, found.index, found.columns
    last = values.gather(1, columns)[:, -1]
    width = TIE_SHARE * (last + found.norms).abs()
    # the rows against every reference row, where the search did not keep them all
    partial = found.partial
    if graph:
        partial = partial_squared(reference, found.rows) if partial is None else partial
        return _reach_within(partial, last, width, index, found.itself, reach)
    around = reach[index.gather(1, columns)].mean(1)
    after = columns[:, -1] + 1  # the nearest row past the kept ones, where there is one
    beyond = values.gather(1, after.clamp_max(values.shape[1] - 1)[:, None])[:, 0]
    tied = ((after < values.shape[1]) & (beyond <= last + width)).nonzero()[:, 0]
    if len(tied):
        partial = partial_squared(reference, found.rows) if partial is None else partial
        part = (partial[tied], last[tied], width[tied], index[tied], found.itself[tied], reach)
        around[tied] = _reach_within(*part)
    return around


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
    """The reference rows' reach: their mean distance to their k nearest others (for a
    row with copies, the others but its copies: aecli/copies.py), floored at a share of the
    mean, so that a row with no distance to any other (a table of one row, repeated) does
    not make a row next to it look infinitely far for where it is."""
    floor = max(float(mean_distance.double().mean()) * REACH_FLOOR, 1e-12)
    return mean_distance.clamp_min(floor)


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
    terms: dict[str, np.ndarray]  # [rows]: neighbour, relative (leave-one-out), density, ...
    density: Density  # the rows' principal components and their histograms
    discrete: Discrete | None  # their discrete columns' values, where they have such columns
    units: Scaler | None = None  # the distances' units, on the model's (``units``)
    # The density without the held-out rows, and its terms on the others (``unseen_density``)
    unseen: tuple[Density, np.ndarray] | None = None
    samples: np.ndarray | None = None  # int64 [samples, size]: the sampled term's (sampled.py)
    marginal: Density | None = None  # each column's histogram (density.fit_columns)


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


def neighbour_reference(
    fitted: FittedModel, values: np.ndarray, held_out: np.ndarray | None = None
) -> Reference:
    """The neighbour terms' statistics from their raw rows (``neighbour_rows``).

    The rows' leave-one-out terms are the training distributions: a new row's distance to
    the reference is distributed as a reference row's to the others. The distances come
    from the model's fixed-size blocks, as ``row_terms`` computes them. ``held_out``: which
    of the rows training held out, for the density they did not shape (``unseen``).
    """
    blocks = fitted.blocks(values)
    scaled = torch.cat(blocks.tensors)[: blocks.rows]
    own = units(fitted.scaler, fitted.row_shape, scaled.numpy())
    blocks.tensors = [in_units(block, own) for block in blocks.tensors]
    exact = torch.cat(blocks.tensors)[: blocks.rows].contiguous()
    reference, kept = as_stored(exact)
    samples = sampled.draw(reference.shape[0])
    drawn = torch.from_numpy(samples)
    found, far = [], []
    for block in blocks.tensors:
        each = nearest_k(reference, block)
        far.append(sampled_term(each, drawn))
        each.partial = None  # every block's at once would hold rows x reference floats
        found.append(each)
    means = torch.cat([each.mean for each in found])
    own_mean = means[: blocks.rows] if kept is None else means[kept]
    reach = reaches(apart_from_copies(reference, own_mean, relative_k(reference.shape[0])))
    around = torch.cat([reach_around(reference, each, reach) for each in found])[: blocks.rows]
    near, mean = torch.cat([each.near for each in found])[: blocks.rows], means[: blocks.rows]
    terms = {"neighbour": near.numpy(), "relative": relative(mean, around).numpy()}
    terms["sampled"] = torch.cat(far)[: blocks.rows].numpy()
    fitted_density = density.fit(exact.numpy())  # the rows' own components, not rounded
    terms["density"] = fitted_density.term(exact.numpy())
    counted = discrete.fit(values)
    if counted is not None:
        terms["discrete"] = counted.term(values)
    # a row is in its bins' counts, as in its value's count (``unseen_density``)
    marginal = density.fit_columns(exact.numpy(), None if counted is None else counted.columns)
    if marginal is not None:
        terms["marginal"] = marginal.term(exact.numpy())
    unseen = unseen_density(exact.numpy(), held_out)
    return Reference(
        reference.numpy(), reach.numpy(), terms, fitted_density, counted, own, unseen, samples,
        marginal,
    )  # fmt: skip


def unseen_density(
    rows: np.ndarray, held_out: np.ndarray | None
) -> tuple[Density, np.ndarray] | None:
    """The density of ``rows`` fitted without the held-out ones, and its terms on the
    others (its training distribution); None where none (or all) of them are held out.

    A row's leave-one-out neighbour terms and its discrete term (the row is among its
    value's count either way: ``Discrete.rarity``) are what a new copy of it would get, but
    its density term is not: the components are fitted to it. On a table of fewer rows
    than columns (137 image embeddings of 512 values) the trailing components span its own
    rows exactly, so new rows land beyond their range along them: the held-out rows' scores, which
    ``--contamination`` reads, must come from a density that never saw them, read against
    its own training rows' terms: a density of fewer rows has fewer components, and its
    term is a sum over them.
    """
    if held_out is None or not held_out.any() or held_out.all():
        return None
    fitted = density.fit(rows[~held_out])
    return fitted, fitted.term(rows[~held_out])
