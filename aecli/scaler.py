"""Per-column scaling fitted on the training data, stored in the model file.

``x_scaled = (x - offset) / scale``; outputs are mapped back with the inverse,
so users see reconstructions and samples in their original units.
"""

from __future__ import annotations

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

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((np.asarray(values, dtype=np.float32) - self.offset) / self.scale).astype(
            np.float32, copy=False
        )

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float32) * self.scale + self.offset).astype(
            np.float32, copy=False
        )
