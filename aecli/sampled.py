"""The anomaly score's sampled-neighbour term: the distance to the nearest of a few rows.

The distance to the nearest training row (aecli/neighbours.py) is blind to a group of
anomalies among the training rows: each is the others' nearest row (issue 39: pendigits,
cardio and optdigits trained on raw rows). Against a small random sample of the rows, a
group that holds a small share of them is absent from most samples, so its rows are far
from the sample's nearest one, while a row of a common kind has one of its kind in almost
every sample. This is what the subsampling of an isolation forest (Liu et al. 2008) and
the one-nearest-neighbour detector on a small sample (Sugiyama & Borgwardt 2013) rest on.
The term is the mean over SAMPLES fixed samples of SAMPLE_ROWS reference rows (a Monte
Carlo estimate of the expected distance to the nearest of that many random rows), drawn by
a fixed seed and kept in the model file, so the score of a row depends on the row alone
and not on ``--seed``.
"""

from __future__ import annotations

import numpy as np
import torch

from aecli.config import ROWS_SEED

SAMPLE_ROWS = 64  # rows in each sample: a group under about 1% of the rows misses half of them
SAMPLES = 32  # samples averaged


def draw(rows: int) -> np.ndarray:
    """SAMPLES samples of ``rows`` reference rows (int64 [SAMPLES, size]), each of
    SAMPLE_ROWS distinct rows, or of all rows but one in a smaller reference (a reference
    row is not its own neighbour, so a sample of all of them would be the nearest row's)."""
    size = max(1, min(SAMPLE_ROWS, rows - 1))
    rng = np.random.default_rng(ROWS_SEED + 6)
    return np.stack([np.sort(rng.choice(rows, size, replace=False)) for _ in range(SAMPLES)])


def term(
    partial: torch.Tensor,
    norms: torch.Tensor,
    samples: torch.Tensor,
    nearest: torch.Tensor,
    itself: torch.Tensor,
    near: torch.Tensor,
    *,
    graph: bool = False,
) -> torch.Tensor:
    """Each row's mean distance, over the samples, to the nearest row of each sample.

    ``partial``: the rows' squared distances to every reference row less their own squared
    norms (``norms``), as aecli/neighbours.py's ``nearest_k`` computes them; ``nearest``
    the nearest reference row and ``itself`` whether it is the row itself, which is not
    its own neighbour here either. A sample that holds nothing else (a reference of two
    rows) counts the distance to the nearest other row, ``near``. ``graph``: the ONNX
    export's trace, whose shapes cannot depend on which rows are reference rows.
    """
    rows, shape = partial.shape[0], samples.shape
    values = partial.index_select(1, samples.reshape(-1))
    if graph:
        values = values.reshape(rows, *shape)
        own = (samples[None] == nearest[:, None, None]) & itself[:, None, None]
        values = values.masked_fill(own, float("inf"))
    else:
        own = _leave_out(values, partial.shape[1], samples, nearest, itself)
        values = values.reshape(rows, *shape)
    distance = (values.min(2).values + norms[:, None]).clamp_min(0.0).sqrt()
    # by the mask, not by an infinite distance: the ONNX graph clamps inf to float32's largest
    if own is not None:
        alone = own.all(2)
        distance = torch.where(alone, near[:, None].to(distance.dtype), distance)
    return distance.mean(1)


def _leave_out(
    values: torch.Tensor,
    reference_rows: int,
    samples: torch.Tensor,
    nearest: torch.Tensor,
    itself: torch.Tensor,
) -> torch.Tensor | None:
    """Set to inf, in ``values`` ([rows, samples x size]), each row's own place in the
    samples where its nearest reference row is itself; the mask the graph builds, where
    a sample can be all the row itself (samples of one row), else None.

    The same values as the graph's mask over [rows, samples, size], from a lookup of where
    each reference row sits in the samples: a training row is almost always its own
    nearest, and the mask cost a third of the term there.
    """
    count, size = samples.shape
    flat = samples.reshape(-1)
    who = itself.nonzero()[:, 0]
    if len(who):
        # slot[r, s]: the position of reference row r in the flattened samples, or -1
        slot = torch.full((reference_rows, count), -1, dtype=torch.long)
        slot[flat, torch.arange(count).repeat_interleave(size)] = torch.arange(flat.numel())
        places = slot[nearest[who]]
        hit = (places >= 0).nonzero()
        values[who[hit[:, 0]], places[hit[:, 0], hit[:, 1]]] = float("inf")
    if size > 1:
        return None
    return (samples[None] == nearest[:, None, None]) & itself[:, None, None]
