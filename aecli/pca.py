"""Principal component analysis: the linear baseline an autoencoder must beat.

An undercomplete autoencoder with linear layers and mse loss learns the same
subspace as PCA; benchmarks compare the two at the same code size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PCA:
    mean: np.ndarray  # [features]
    components: np.ndarray  # [k, features], orthonormal rows

    @classmethod
    def fit(cls, values: np.ndarray, k: int) -> PCA:
        """The top-k principal directions of the centred rows (via SVD)."""
        data = np.asarray(values, dtype=np.float64)
        mean = data.mean(axis=0)
        _, _, vt = np.linalg.svd(data - mean, full_matrices=False)
        return cls(mean, vt[:k])

    def encode(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.mean) @ self.components.T

    def reconstruct(self, values: np.ndarray) -> np.ndarray:
        return self.encode(values) @ self.components + self.mean
