"""The relative term's reach for reference rows that repeat exactly.

A reference row's reach is its mean distance to its k nearest other rows. Where a row
comes ten or more times (a table of grades, counts or flags: 62% of breastw's benign
rows repeat another exactly), those nearest are its own copies, its reach is 0, and a
new row one step from it would count as infinitely far for where it is: the relative
term of such tables ranked normal rows above anomalies (docs/anomaly.md, the twins).
Breunig et al. (2000) meet duplicates with the k-distinct distance; here a row's copies
are left out of its own k nearest, which are counted from the other rows, each as often
as it comes. Rows without copies keep their reach, so a table without repeated rows
trains the same file as before.
"""

from __future__ import annotations

import numpy as np
import torch

from aecli.distances import partial_squared

GROUPS_BLOCK = 256  # kinds of copied rows measured at once: a block of them x kinds floats


def apart_from_copies(reference: torch.Tensor, mean: torch.Tensor, k: int) -> torch.Tensor:
    """``mean`` (each reference row's mean distance to its ``k`` nearest others) with the
    rows that have exact copies measured to their ``k`` nearest rows that are not copies.

    A row of which every other row is a copy keeps its ``mean`` (0): there is no other.
    """
    rows = reference.numpy()
    if len({row.tobytes() for row in rows}) == len(rows):
        return mean  # no copies: a tenth of np.unique's sort of a wide table
    unique, inverse, counts = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
    copied = np.flatnonzero(counts > 1)
    kinds = torch.from_numpy(np.ascontiguousarray(unique, dtype=np.float32))
    weight = torch.from_numpy(counts.astype(np.float64))
    norms = kinds.square().sum(1)
    # every kind comes at least once, so the k nearest kinds hold the k nearest rows
    nearest = min(k, len(unique) - 1)
    if nearest == 0:
        return mean  # one kind of row: no other, the mean (0) stays
    apart = np.full(len(unique), np.nan)
    for start in range(0, len(copied), GROUPS_BLOCK):
        groups = torch.from_numpy(copied[start : start + GROUPS_BLOCK])
        squared = partial_squared(kinds, kinds[groups], norms)
        squared += norms[groups, None]
        squared[torch.arange(len(groups)), groups] = torch.inf  # its own copies
        values, order = squared.topk(nearest, dim=1, largest=False, sorted=True)
        times = weight[order]
        before = times.cumsum(1) - times
        taken = (k - before).clamp(min=0.0).minimum(times)  # how many of each kind count
        distance = values.double().clamp_min(0.0).sqrt()
        mean_apart = (taken * distance).sum(1) / taken.sum(1)
        apart[copied[start : start + GROUPS_BLOCK]] = mean_apart.numpy()
    per_row = torch.from_numpy(apart[inverse.reshape(-1)]).to(mean.dtype)
    has_copies = torch.from_numpy(counts[inverse.reshape(-1)] > 1) & ~torch.isnan(per_row)
    return torch.where(has_copies, per_row, mean)
