"""Per-column scaling fitted on the training data, stored in the model file.

``x_scaled = clip((x - offset) / scale, -clip, clip)``; outputs are mapped back
with the inverse (without the clip), so users see reconstructions and samples
in their original units.

``auto`` (the default) picks a method from the data, for reasons that hold on
any table (see ``choose``): data already in [0, 1] keeps its units, images
share one range, and other tables are centred on the median and divided by a
robust spread, then clipped, so that heavy tails and a few extreme rows can
neither squash every other value nor dominate the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from aecli.config import Scale

# Normal-consistent spread: the IQR of N(0, 1) is 2 * 0.6745 = 1.349 sigma.
IQR_SIGMA = 1.349
# Robust-scaled values beyond this many spreads are clipped. 5 spreads is far in the
# tail of any bell-shaped column (p < 6e-7 for a normal), so ordinary rows are never
# touched, while a value 1000 spreads out counts as 5: a few such rows no longer set
# the loss, and their error still ranks them at the top of the anomaly scores.
ROBUST_CLIP = 5.0


@dataclass
class Scaler:
    method: str  # the resolved method: never "auto" once fitted
    offset: np.ndarray  # float32 [features]
    scale: np.ndarray  # float32 [features], never 0
    clip: float | None = None  # scaled values are clipped to [-clip, clip]
    reason: str = ""  # why ``auto`` chose the method (shown by ``info``)
    # The fitted data's per-column range, raw units (not stored in model files).
    bounds: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def fit(
        cls,
        values: np.ndarray,
        method: str,
        *,
        row_shape: tuple[int, ...] = (),
        unit_range: bool = False,
    ) -> Scaler:
        """Fit on training rows; constant columns get scale 1 so nothing divides by 0.

        ``method`` ``auto`` is resolved by ``choose``; ``unit_range`` says the loss
        needs scaled values in [0, 1] (cross-entropy).
        """
        data = np.asarray(values, dtype=np.float64)
        reason = ""
        if method == Scale.auto:
            low, high = data.min(axis=0), data.max(axis=0)
            method, reason = choose(low, high, row_shape, unit_range)
        if method == Scale.robust:
            low, mid, high = np.quantile(data, [0.25, 0.5, 0.75], axis=0)
            return cls._robust(mid, (high - low) / IQR_SIGMA, data.std(axis=0), reason)
        return cls._from_sums(
            method,
            data.min(axis=0),
            data.max(axis=0),
            data.sum(axis=0),
            np.square(data).sum(axis=0),
            len(data),
            reason,
        )

    @classmethod
    def fit_chunks(
        cls,
        chunks: Iterable[np.ndarray],
        method: str,
        *,
        row_shape: tuple[int, ...] = (),
        unit_range: bool = False,
        sample: np.ndarray | Callable[[], np.ndarray] | None = None,
    ) -> Scaler:
        """``fit`` over row chunks (one pass, float64 sums): for data that does not fit memory.

        Robust scaling takes its quantiles from ``sample``, a seeded sample of the rows
        (or a function giving it, called after the pass, once the rows are counted).
        """
        low = high = total = squares = None
        count = 0
        for chunk in chunks:
            data = np.asarray(chunk, dtype=np.float64)
            if not len(data):
                continue
            count += len(data)
            if low is None:
                low, high = data.min(0), data.max(0)
                total, squares = data.sum(0), np.square(data).sum(0)
            else:
                low, high = np.minimum(low, data.min(0)), np.maximum(high, data.max(0))
                total, squares = total + data.sum(0), squares + np.square(data).sum(0)
        if low is None:
            raise ValueError("no rows to fit a scaler on")
        reason = ""
        if method == Scale.auto:
            method, reason = choose(low, high, row_shape, unit_range)
        if method == Scale.robust:
            if sample is None:
                raise ValueError("robust scaling of streamed rows needs a sample of them")
            if callable(sample):
                sample = sample()
            q1, mid, q3 = np.quantile(np.asarray(sample, np.float64), [0.25, 0.5, 0.75], axis=0)
            std = np.sqrt(np.maximum(squares / count - (total / count) ** 2, 0.0))
            scaler = cls._robust(mid, (q3 - q1) / IQR_SIGMA, std, reason)
        else:
            scaler = cls._from_sums(method, low, high, total, squares, count, reason)
        scaler.bounds = (low, high)
        return scaler

    @classmethod
    def _from_sums(
        cls,
        method: str,
        low: np.ndarray,
        high: np.ndarray,
        total: np.ndarray,
        squares: np.ndarray,
        count: int,
        reason: str,
    ) -> Scaler:
        if method == Scale.minmax:
            offset, scale = low, high - low
        elif method == Scale.standard:
            offset = total / count
            scale = np.sqrt(np.maximum(squares / count - offset**2, 0.0))
        elif method == Scale.global_:
            offset = np.full_like(low, low.min())
            scale = np.full_like(low, high.max() - low.min())
        elif method == Scale.none:
            offset, scale = np.zeros_like(low), np.ones_like(low)
        else:
            raise ValueError(f"unknown scaling {method!r}")
        return cls._make(method, offset, scale, None, reason)

    @classmethod
    def _robust(
        cls, median: np.ndarray, spread: np.ndarray, std: np.ndarray, reason: str
    ) -> Scaler:
        # Both the interquartile spread (over IQR_SIGMA) and the standard deviation are a
        # normal column's sigma, and each overstates a column that departs from normal one
        # way: the deviation a heavy-tailed one (a few extreme values), the interquartile
        # spread a light-tailed one (two modes, a pixel on or off: for 0s and 1s in equal
        # shares 0.74 against 0.5), so the smaller is the one that its departure did not
        # inflate. A column with mostly one value (a flag, a count that is usually 0) has
        # no interquartile spread: its standard deviation, the next measure of its width.
        spread = np.where(spread > 0, np.minimum(spread, std), std)
        return cls._make(Scale.robust, median, spread, ROBUST_CLIP, reason)

    @classmethod
    def _make(
        cls,
        method: str,
        offset: np.ndarray,
        scale: np.ndarray,
        clip: float | None,
        reason: str,
    ) -> Scaler:
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        return cls(method, offset.astype(np.float32), scale.astype(np.float32), clip, reason)

    def span(self) -> tuple[float, float] | None:
        """The least and greatest scaled training value, from the fitted column ranges.

        None for a scaler read from a model file, which keeps no ranges.
        """
        if self.bounds is None:
            return None
        edges = self.transform(np.stack(self.bounds).astype(np.float32))
        return float(edges.min()), float(edges.max())

    @property
    def unit_range(self) -> bool:
        """Whether scaled training values lie in [0, 1], as cross-entropy needs.

        Read from the numbers (the fitted ranges), not from the words of ``reason``.
        """
        span = self.span()
        if span is None:
            return self.method in (Scale.minmax, Scale.global_)
        return span[0] >= -UNIT_TOLERANCE and span[1] <= 1 + UNIT_TOLERANCE

    @property
    def vae_bce(self) -> bool:
        """Whether a vae's ``--loss auto`` is bce with this scaling.

        Yes on [0, 1] data; and for a method chosen by hand (no ``reason``), as
        before ``auto`` existed, bce stays the default and is checked on the data.
        """
        return self.unit_range or not self.reason

    def transform(self, values: np.ndarray, *, clip: bool = True) -> np.ndarray:
        """Scaled values; ``clip=False`` gives them unclipped (what anomaly scores compare to)."""
        scaled = (np.asarray(values, dtype=np.float32) - self.offset) / self.scale
        if clip and self.clip is not None:
            np.clip(scaled, -self.clip, self.clip, out=scaled)
        return scaled.astype(np.float32, copy=False)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float32) * self.scale + self.offset).astype(
            np.float32, copy=False
        )


UNIT_REASON = "values already in [0, 1]"
UNIT_TOLERANCE = 1e-6  # float32 rounding of a min-max range's ends


def choose(
    low: np.ndarray, high: np.ndarray, row_shape: tuple[int, ...], unit_range: bool
) -> tuple[str, str]:
    """What ``--scale auto`` does with data whose columns span [low, high], and why.

    - Values already in [0, 1] (pixel intensities, probabilities, shares) keep their
      units: stretching each column to [0, 1] would turn a border pixel that is
      almost always 0 into a full-range target, and a faint stroke into a bold one.
    - Images (rows of two or more axes) share one range, for the same reason.
    - Other tables: the median and a robust spread per column, clipped at
      ``ROBUST_CLIP`` spreads, unless the loss needs [0, 1] (cross-entropy): then
      each column's own min-max range.
    """
    if float(low.min()) >= 0.0 and float(high.max()) <= 1.0:
        return Scale.none, f"{UNIT_REASON}: kept as they are"
    if len(row_shape) >= 2:
        return Scale.global_, "image rows: one range for every pixel"
    if unit_range:
        return Scale.minmax, "cross-entropy needs [0, 1]: each column's min-max range"
    return (
        Scale.robust,
        f"a table: median and spread per column (interquartile or standard, the smaller), "
        f"clipped at {ROBUST_CLIP:g} spreads, so extreme rows cannot set the scale",
    )
