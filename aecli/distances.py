"""Squared Euclidean distances between rows, in the one matrix product every neighbour term uses.

The neighbour terms (aecli/neighbours.py) and the reach of repeated rows (aecli/copies.py)
all need |x - r|^2 for blocks of rows against reference rows. Written as |r|^2 - 2 x.r,
the part that depends on both is one ``addmm``; |x|^2 is the same along a row, so a
caller that only ranks a row's distances adds it to the few it keeps. One function, so
that every term computes its distances with the same operations, in the same order, and
rounds them the same way.
"""

from __future__ import annotations

import torch


def partial_squared(
    reference: torch.Tensor, rows: torch.Tensor, ref_norms: torch.Tensor | None = None
) -> torch.Tensor:
    """|r|^2 - 2 x.r for every row x and reference row r (``ref_norms``: the reference
    rows' squared norms, where the caller has them); add |x|^2 for the squared distance."""
    ref_norms = reference.square().sum(1) if ref_norms is None else ref_norms
    return torch.addmm(ref_norms[None, :], rows, reference.T, beta=1.0, alpha=-2.0)
