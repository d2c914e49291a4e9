"""The anomaly score's fifth term: how rare a row is along each principal component.

The other four terms see a row whole: through the autoencoder (its residual and its
code, two Gaussians) or through its nearest training rows. A row can be ordinary by all
of them and still sit where, along one direction of the data, few training rows lie:
between two modes, or in a thin tail that no Gaussian and no neighbour count notices.
Histogram-based outlier scores (HBOS, Goldstein & Dengel 2012) see that, one histogram
per column; here the columns are first turned into the training rows' principal
components, so that correlated columns (the 512 coordinates of an image embedding) are
not counted again and again as independent evidence, and the directions the histograms
look along are the data's own (issue 39: measured in docs/anomaly.md).

The term is ``sum_k -log p_k(z_k)``, z the row's components and p_k the share of
training rows in z_k's bin of ``BINS`` equal bins over the training range, smoothed by
one row per bin. Read as a frequency polygon (linear between bin centres, falling to the
share of an empty bin half a bin beyond the range, flat after) it is continuous in the
row, so a float32 graph (ONNX) moves it by a rounding's worth, not by a bin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aecli import principal

BINS = 10  # HBOS's and PyOD's default: coarse enough for a table of a hundred rows
COMPONENT_FLOOR = 1e-6  # components with less variance, as a share of the largest, are noise
BLOCK = 8192  # rows per float64 block, so that a wide table is never copied whole
AXES_VALUES = 2**20  # the axes kept hold at most this many values (4 MB of float32)


@dataclass
class Density:
    """Principal axes of the training rows and the histogram of each component."""

    mean: np.ndarray  # float32 [inputs]
    axes: np.ndarray  # float32 [inputs, components]
    low: np.ndarray  # float32 [components]: position 0 of each component's knots
    step: np.ndarray  # float32 [components]: one bin's width
    knots: np.ndarray  # float32 [components, BINS + 2]: -log share at each knot

    def term(self, rows: np.ndarray) -> np.ndarray:
        """The term for scaled rows (float32 [rows, inputs]), in float64."""
        out = np.empty(len(rows), dtype=np.float64)
        axes, mean = self.axes.astype(np.float64), self.mean.astype(np.float64)
        for start in range(0, len(rows), BLOCK):
            block = rows[start : start + BLOCK].astype(np.float64) - mean
            out[start : start + BLOCK] = self.lookup(block @ axes).sum(1)
        return out

    def lookup(self, components: np.ndarray) -> np.ndarray:
        """Each component's -log share, linear between knots, flat beyond the ends; NaN for
        an undefined component (a row of NaN given through the Python API)."""
        last = self.knots.shape[1] - 1
        position = np.clip((components - self.low) / self.step, 0.0, float(last))
        undefined = np.isnan(position)
        position[undefined] = 0.0
        index = np.minimum(np.floor(position), last - 1).astype(np.int64)
        within = position - index
        knots = self.knots.astype(np.float64)
        rows = np.arange(knots.shape[0])[None, :]
        left, right = knots[rows, index], knots[rows, index + 1]
        value = left + within * (right - left)
        value[undefined] = np.nan
        return value


def fit(rows: np.ndarray) -> Density:
    """The principal components of scaled rows and a histogram of each.

    Knot 0 lies half a bin below the training minimum and knot ``BINS + 1`` half a bin
    above the maximum, both at the share of an empty bin; knots 1..BINS at the bin
    centres. A component with no spread (a constant one) is left out: rows that do not
    vary at all (a single row) have none, and the term is 0.
    """
    data = rows.astype(np.float64)
    mean = data.mean(0)
    variances, vectors = _principal_axes(data - mean)
    keep = variances > COMPONENT_FLOOR * max(float(variances.max()), 1e-30)
    keep[AXES_VALUES // data.shape[1] :] = False  # the largest ones, within the file's bound
    axes = vectors[:, keep].astype(np.float32)
    components = (data - mean) @ axes.astype(np.float64)
    low, high = components.min(0), components.max(0)
    step = np.maximum(high - low, 1e-12) / BINS
    bins = np.clip(np.floor((components - low) / step), 0, BINS - 1).astype(np.int64)
    counts = np.zeros((bins.shape[1], BINS))
    for k in range(bins.shape[1]):
        counts[k] = np.bincount(bins[:, k], minlength=BINS)
    empty = np.full((len(counts), 1), -np.log(1.0 / (len(data) + BINS)))
    shares = -np.log((counts + 1.0) / (len(data) + BINS))
    knots = np.hstack([empty, shares, empty]).astype(np.float32)
    return Density(
        mean.astype(np.float32),
        axes,
        (low - 0.5 * step).astype(np.float32),
        step.astype(np.float32),
        knots,
    )


def _principal_axes(centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Variances and unit axes of centred rows, largest first.

    From the inputs' covariance (inputs x inputs), or where there are fewer rows than
    inputs from the rows' Gram matrix (rows x rows), whichever is the smaller problem; in
    ``aecli.principal``, so that the axes are the same bytes at any thread count.
    """
    rows, width = centred.shape
    if rows >= width:
        blocks = (centred[start : start + BLOCK] for start in range(0, rows, BLOCK))
        variances, vectors = principal.eigh(principal.scatter(blocks, np.zeros(width)))
    else:
        variances, gram_vectors = principal.eigh(principal.product(centred, centred.T))
        vectors = principal.product(centred.T, gram_vectors)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=0), 1e-300)
    return np.maximum(variances, 0.0) / max(rows - 1, 1), vectors
