"""Per-column scaling fitted on the training data, stored in the model file.

``x_scaled = (x - offset) / scale``; outputs are mapped back with the inverse,
so users see reconstructions and samples in their original units.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from aecli.config import Scale


@dataclass
class Scaler:
    method: str
    offset: np.ndarray  # float32 [features]
    scale: np.ndarray  # float32 [features], never 0

    @classmethod
    def fit(cls, values: np.ndarray, method: str) -> Scaler:
        """Fit on training rows; constant columns get scale 1 so nothing divides by 0."""
        data = np.asarray(values, dtype=np.float64)
        if method == Scale.minmax.value:
            offset = data.min(axis=0)
            scale = data.max(axis=0) - offset
        elif method == Scale.standard.value:
            offset = data.mean(axis=0)
            scale = data.std(axis=0)
        elif method == Scale.none.value:
            offset = np.zeros(data.shape[1])
            scale = np.ones(data.shape[1])
        else:
            raise ValueError(f"unknown scaling {method!r}")
        scale = np.where(scale > 0, scale, 1.0)
        return cls(method, offset.astype(np.float32), scale.astype(np.float32))

    @classmethod
    def fit_chunks(cls, chunks: Iterable[np.ndarray], method: str) -> Scaler:
        """``fit`` over row chunks (one pass, float64 sums): for data that does not fit memory."""
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
        if method == Scale.minmax.value:
            offset, scale = low, high - low
        elif method == Scale.standard.value:
            offset = total / count
            scale = np.sqrt(np.maximum(squares / count - offset**2, 0.0))
        elif method == Scale.none.value:
            offset, scale = np.zeros_like(low), np.ones_like(low)
        else:
            raise ValueError(f"unknown scaling {method!r}")
        scale = np.where(scale > 0, scale, 1.0)
        return cls(method, offset.astype(np.float32), scale.astype(np.float32))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((np.asarray(values, dtype=np.float32) - self.offset) / self.scale).astype(
            np.float32, copy=False
        )

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float32) * self.scale + self.offset).astype(
            np.float32, copy=False
        )
