"""The score's histogram terms as torch ops, for the ONNX graph of ``score`` (aecli/export.py).

Each repeats its numpy original op for op, so that the graph scores as the CLI does: the
distances' own units (aecli/neighbours.py), the density along the principal components
(aecli/density.py) on the rows in those units, the rarity of the discrete columns' values
(aecli/discrete.py) on the raw ones.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from aecli.modelchecks import TERM_PARTS

if TYPE_CHECKING:
    from aecli.density import Density
    from aecli.discrete import Discrete
    from aecli.fitted import CodeStats
    from aecli.scaler import Scaler


def as_buffer(values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """An array as a graph's constant (a copy: the graph must not share the model's memory)."""
    return torch.from_numpy(np.array(values)).to(dtype)


def register_neighbours(graph: torch.nn.Module, stats: CodeStats | None) -> bool:
    """The terms beside the autoencoder's as buffers: the reference rows, their units,
    reach and samples, the histogram terms, each term's percentiles and tail knees, the
    weights, floors and lower tails.
    False for a file written before the neighbour term (or without the score's statistics).
    """
    if stats is None or stats.reference is None or stats.grids is None:
        return False
    from aecli.tails import knees, weights

    reference = as_buffer(stats.reference, torch.float32)
    graph.register_buffer("reference", reference)
    # their squared norms as torch computes them at `score`; from the reference in the
    # graph, the exporter folded the squares into a second reference-sized constant
    graph.register_buffer("reference_norms", reference.square().sum(1))
    graph.has_units = register_units(graph, stats.units)
    graph.weights = weights(stats.grids)
    graph.floors = dict(stats.floors)
    graph.lowers = dict(stats.lowers)
    graph.powers = dict(stats.powers)
    graph.has_reach = stats.reach is not None
    if graph.has_reach:
        graph.register_buffer("reach", as_buffer(stats.reach, torch.float32))
    graph.has_samples = stats.samples is not None
    if graph.has_samples:
        graph.register_buffer("samples", as_buffer(stats.samples, torch.int64))
    graph.has_density = register_density(graph, stats.density)
    graph.has_marginal = register_density(graph, stats.marginal, "marginal")
    graph.has_discrete = register_discrete(graph, stats.discrete)
    graph.has_mixture = register_mixture(graph, stats)
    for name in [*graph.weights, *(["mixture"] if graph.has_mixture else [])]:
        grid = stats.grids[name].astype("float64")
        graph.register_buffer(f"grid_{name}", as_buffer(grid, torch.float64))
        q50, q99 = knees(grid)
        span = stats.spans.get(name, math.log(q99 / q50))  # tails.tail's
        setattr(graph, f"knees_{name}", (q99, span))
    return True


def register_mixture(graph: torch.nn.Module, stats: CodeStats) -> bool:
    """The code mixture's means, precisions and offsets as float64 buffers; False for a
    file written before it (format 12)."""
    if stats.mixture is None:
        return False
    mixture = stats.mixture
    graph.register_buffer("mixture_means", as_buffer(mixture.means, torch.float64))
    graph.register_buffer("mixture_precisions", as_buffer(mixture.precisions, torch.float64))
    graph.register_buffer("mixture_offsets", as_buffer(mixture.offsets(), torch.float64))
    graph.mixture_reads_rows = mixture.axes is not None  # format 13: the rows' components
    if mixture.axes is not None:
        graph.register_buffer("mixture_centre", as_buffer(mixture.centre, torch.float64))
        graph.register_buffer("mixture_axes", as_buffer(mixture.axes, torch.float64))
    return True


def mixture_term(graph: torch.nn.Module, codes: torch.Tensor, apart: torch.Tensor) -> torch.Tensor:
    """aecli/mixture.py's ``read``, op for op: -log sum_k exp(offset_k - d_k / 2), on the
    codes or (format 13) on the rows' (``apart``: the distances' units) whitened components."""
    if graph.mixture_reads_rows:
        codes = (apart.double() - graph.mixture_centre) @ graph.mixture_axes
    centred = codes.double()[:, None, :] - graph.mixture_means[None]  # [rows, K, D]
    squared = (torch.einsum("nkd,kde->nke", centred, graph.mixture_precisions) * centred).sum(2)
    logs = graph.mixture_offsets[None, :] - 0.5 * squared
    top = logs.max(1, keepdim=True).values
    return -(top[:, 0] + torch.log(torch.exp(logs - top).sum(1)))


def register_units(graph: torch.nn.Module, units: Scaler | None) -> bool:
    """The distances' own units (aecli/neighbours.py ``units``) as buffers; False without."""
    if units is None:
        return False
    graph.register_buffer("units_offset", as_buffer(units.offset, torch.float32))
    graph.register_buffer("units_scale", as_buffer(units.scale, torch.float32))
    graph.units_clip = float(units.clip or math.inf)
    return True


def in_units(graph: torch.nn.Module, scaled: torch.Tensor) -> torch.Tensor:
    """aecli/neighbours.py's ``in_units``, op for op."""
    apart = (scaled - graph.units_offset) / graph.units_scale
    return apart.clamp(-graph.units_clip, graph.units_clip)


def register_density(
    graph: torch.nn.Module, density: Density | None, name: str = "density"
) -> bool:
    """The density term's arrays as float64 buffers ``density_mean``, ``density_axes``...
    (or the marginal term's, ``marginal_low``...); False for a file written before it."""
    if density is None:
        return False
    for part in TERM_PARTS[name]:
        array = getattr(density, part)
        graph.register_buffer(f"{name}_{part}", as_buffer(array, torch.float64))
    return True


def density_term(
    graph: torch.nn.Module, scaled: torch.Tensor, name: str = "density"
) -> torch.Tensor:
    """aecli/density.py's ``term``, op for op: the knots' polygon, one gather per value;
    along the components (density) or the columns (marginal)."""
    components = scaled.double()
    if name == "density":
        components = (components - graph.density_mean) @ graph.density_axes
    knots = getattr(graph, f"{name}_knots")
    last = knots.shape[1] - 1
    low, step = getattr(graph, f"{name}_low"), getattr(graph, f"{name}_step")
    position = ((components - low) / step).clamp(0.0, last)
    undefined = torch.isnan(position)
    position = torch.where(undefined, torch.zeros_like(position), position)
    index = position.floor().clamp(max=last - 1)
    within = position - index
    offsets = torch.arange(knots.shape[0], dtype=torch.float64) * (last + 1)
    flat = (index + offsets).long()
    left = knots.reshape(-1)[flat]
    right = knots.reshape(-1)[flat + 1]
    value = left + within * (right - left)
    return torch.where(undefined, torch.full_like(value, math.nan), value).sum(1)


def histogram_terms(
    graph: torch.nn.Module, scaled: torch.Tensor, rows: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The density term on the scaled rows and the discrete one on the raw rows, those the
    file has."""
    terms = {"density": density_term(graph, scaled)} if graph.has_density else {}
    if graph.has_marginal:
        terms["marginal"] = density_term(graph, scaled, "marginal")
    return {**terms, "discrete": discrete_term(graph, rows)} if graph.has_discrete else terms


def register_discrete(graph: torch.nn.Module, discrete: Discrete | None) -> bool:
    """The discrete term's columns, values and rarities as buffers; False without one."""
    if discrete is None:
        return False
    rarity, unseen = discrete.rarity()
    graph.register_buffer("discrete_columns", as_buffer(discrete.columns, torch.int64))
    graph.register_buffer("discrete_levels", as_buffer(discrete.levels, torch.float32))
    graph.register_buffer("discrete_rarity", as_buffer(rarity, torch.float64))
    graph.register_buffer("discrete_unseen", as_buffer(unseen, torch.float64))
    return True


def discrete_term(graph: torch.nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """aecli/discrete.py's ``term``: each value's place among its column's values (a count of
    those below it, as searchsorted finds it), then the rarity there if the value is there."""
    levels = graph.discrete_levels
    values = rows.index_select(1, graph.discrete_columns)
    below = (levels[None] < values[:, :, None]).sum(2).clamp(max=levels.shape[1] - 1)
    flat = below + torch.arange(levels.shape[0]) * levels.shape[1]
    seen = levels.reshape(-1)[flat] == values
    rarity = graph.discrete_rarity.reshape(-1)[flat]
    return torch.where(seen, rarity, graph.discrete_unseen[None]).sum(1)
