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
from typing import Any

import numpy as np

from aecli import principal

BINS = 10  # HBOS's and PyOD's default: coarse enough for a table of a hundred rows
COMPONENT_FLOOR = 1e-6  # components with less variance, as a share of the largest, are noise
BLOCK = 8192  # rows per float64 block, so that a wide table is never copied whole
AXES_VALUES = 2**20  # the axes kept hold at most this many values (4 MB of float32)


@dataclass
class Density:
    """Principal axes of the training rows and the histogram of each component; or, with
    no mean and no axes, the histogram of each column (the marginal term, format 15)."""

    mean: np.ndarray | None  # float32 [inputs]; None: the columns themselves
    axes: np.ndarray | None  # float32 [inputs, components]; None: the columns themselves
    low: np.ndarray  # float32 [components]: position 0 of each component's knots
    step: np.ndarray  # float32 [components]: one bin's width
    knots: np.ndarray  # float32 [components, BINS + 2]: -log share at each knot

    def term(self, rows: np.ndarray) -> np.ndarray:
        """The term for scaled rows (float32 [rows, inputs]), in float64."""
        out = np.empty(len(rows), dtype=np.float64)
        for start in range(0, len(rows), BLOCK):
            block = rows[start : start + BLOCK].astype(np.float64)
            if self.axes is not None and self.mean is not None:
                block = (block - self.mean.astype(np.float64)) @ self.axes.astype(np.float64)
            out[start : start + BLOCK] = self.lookup(block).sum(1)
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
        flat = index + np.arange(self.knots.shape[0]) * (last + 1)  # into the raveled knots:
        knots = self.knots.astype(np.float64).ravel()  # take is 1.8x a 2-d fancy index
        left, right = knots.take(flat), knots.take(flat + 1)
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
    return Density(mean.astype(np.float32), axes, *_histograms(components))


def fit_columns(rows: np.ndarray, left: np.ndarray | None = None) -> Density | None:
    """A histogram of each column of scaled rows: HBOS itself, the marginal term (format 15);
    None where no column is counted.

    The components see correlated columns once, and the columns see a row that is rare in
    one of them, which every component mixes with the others (docs/anomaly.md). Columns
    ``left`` (the discrete term's, whose values it counts one by one, as HBOS counts a
    categorical column's) and a column whose range is under ``COMPONENT_FLOOR`` of the
    widest one's are not counted: their knots are all one value, so that they add the same
    to every row, as the density leaves out a component without spread (a bin of width
    1e-13 would turn a float32 rounding of a row's value into a jump to an empty bin)."""
    data = rows.astype(np.float64)
    spans = data.max(0) - data.min(0)
    flat = spans <= COMPONENT_FLOOR * max(float(spans.max(initial=0.0)), 1e-30)
    if left is not None:
        flat[left] = True
    if flat.all():
        return None
    low, step, knots = _histograms(data)
    knots[flat] = knots[flat].min(1, keepdims=True)
    step[flat] = 1.0
    return Density(None, None, low, step, knots)


def _histograms(components: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each column's ``low``, ``step`` and ``knots`` (float32): ``BINS`` equal bins over its
    training range, one row added to each, knots at the centres and half a bin beyond."""
    low, high = components.min(0), components.max(0)
    step = np.maximum(high - low, 1e-12) / BINS
    bins = np.clip(np.floor((components - low) / step), 0, BINS - 1).astype(np.int64)
    columns = bins.shape[1]  # one bincount for every column: bin k * BINS + b
    flat = (bins + np.arange(columns) * BINS).ravel()
    counts = np.bincount(flat, minlength=columns * BINS).reshape(columns, BINS).astype(np.float64)
    rows = len(components)
    empty = np.full((len(counts), 1), -np.log(1.0 / (rows + BINS)))
    shares = -np.log((counts + 1.0) / (rows + BINS))
    knots = np.hstack([empty, shares, empty]).astype(np.float32)
    return (low - 0.5 * step).astype(np.float32), step.astype(np.float32), knots


def checked(arrays: dict[str, Any], width: int, name: str = "density") -> Density:
    """The density term's axes and histograms from a model file's arrays (``name``:
    density), or the marginal term's histograms, one per input (marginal), checked
    against the input width; a damaged file gets a one-line ValueError."""
    parts = {"mean": None, "axes": None, **arrays}
    axes = parts["axes"]
    components = width if axes is None else axes.shape[1] if axes.ndim == 2 else 0
    shapes = {
        "mean": (width,),
        "axes": (width, components),
        "low": (components,),
        "step": (components,),
        "knots": (components, BINS + 2),
    }
    if not 0 <= components <= width or any(
        parts[k] is not None and parts[k].shape != v for k, v in shapes.items()
    ):
        raise ValueError(f"the {name} term does not match the number of inputs")
    finite = all(a is None or np.isfinite(a).all() for a in parts.values())
    if not finite or not (parts["step"] > 0).all():
        raise ValueError(f"the {name} term is not finite, or a bin has no width")
    return Density(**parts)


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
