"""Principal component analysis: the linear baseline an autoencoder must beat.

An undercomplete autoencoder with linear layers and mse loss learns the same
subspace as PCA; benchmarks compare the two at the same code size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from aecli import principal


@dataclass
class PCA:
    mean: np.ndarray  # [features]
    components: np.ndarray  # [k, features], orthonormal rows
    # Fitted on the model's scaled rows (so a column of incomes does not outweigh the rest);
    # files written before this fitted it in the original units (False).
    scaled: bool = False

    @classmethod
    def fit(cls, values: np.ndarray, k: int) -> PCA:
        """The top-k principal directions of the centred rows.

        From the eigenvectors of the d x d scatter matrix, accumulated in
        chunks of rows: memory stays at d x d however many rows there are. In
        ``aecli.principal``, so that the file's baseline does not hang on the threads.
        """
        data = np.asarray(values)
        d = data.shape[1]
        total = np.zeros(d)
        for start in range(0, len(data), 65536):
            total += data[start : start + 65536].astype(np.float64).sum(0)
        mean = total / len(data)
        blocks = (data[start : start + 65536] for start in range(0, len(data), 65536))
        _, vectors = principal.eigh(principal.scatter(blocks, mean))
        return cls(mean, np.ascontiguousarray(vectors[:, :k].T))

    @classmethod
    def fit_chunks(cls, chunks: Callable[[], Iterable[np.ndarray]], k: int) -> PCA:
        """``fit`` over row chunks, two passes (mean, then scatter): memory d x d."""
        total, count = None, 0
        for chunk in chunks():
            data = chunk.astype(np.float64)
            total = data.sum(0) if total is None else total + data.sum(0)
            count += len(data)
        assert total is not None and count
        mean = total / count
        _, vectors = principal.eigh(principal.scatter(chunks(), mean))
        return cls(mean, np.ascontiguousarray(vectors[:, :k].T))

    def encode(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.mean) @ self.components.T

    def reconstruct(self, values: np.ndarray) -> np.ndarray:
        return self.encode(values) @ self.components + self.mean
