"""Products and eigendecompositions whose bytes do not depend on the process's threads.

A model file is the same bytes for the same ``--seed`` on the same device: in one process,
streamed, or on torchrun's workers (which run one thread each, where a process on its own
takes every core). numpy's products and eigensolver run on as many BLAS threads as the
process has, and a sum split over two threads rounds differently from one: on 512-wide
embeddings the density term's axes differed in their last bits between one thread and two.
These run in torch, in float64, on one thread for the call; the products they serve (a
covariance of at most 10,000 sampled rows, a streamed PCA's scatter) are a small share of a
fit. Torch is imported here, not at the top: the modules that call these are loaded by
commands that never fit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


@contextlib.contextmanager
def one_thread() -> Iterator[Any]:
    """Torch on one thread for the block (sums in one order), the process's count after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield torch
    finally:
        torch.set_num_threads(threads)


def product(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left @ right`` in float64, the same bytes at any thread count."""
    with one_thread() as torch:
        a = torch.from_numpy(np.ascontiguousarray(left, dtype=np.float64))
        b = torch.from_numpy(np.ascontiguousarray(right, dtype=np.float64))
        return (a @ b).numpy()


def scatter(blocks: Iterable[np.ndarray], mean: np.ndarray) -> np.ndarray:
    """The sum over ``blocks`` of rows of (row - mean)(row - mean)^T, in float64."""
    total = np.zeros((len(mean), len(mean)))
    centre = np.asarray(mean, dtype=np.float64)
    for block in blocks:
        centred = np.ascontiguousarray(np.asarray(block, dtype=np.float64) - centre)
        with one_thread() as torch:
            rows = torch.from_numpy(centred)
            total += (rows.T @ rows).numpy()  # the transpose a view: no copy of the block
    return total


def eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A symmetric matrix's eigenvalues, largest first, and unit eigenvectors (columns)."""
    with one_thread() as torch:
        values, vectors = torch.linalg.eigh(torch.from_numpy(np.asarray(matrix, np.float64)))
    # copies, not views: a reversed 1 x 1 array counts as contiguous, negative strides and all,
    # and torch refuses those (the density of the one row a held-out table may leave)
    return values.numpy()[::-1].copy(), vectors.numpy()[:, ::-1].copy()


def inverse(matrix: np.ndarray) -> np.ndarray:
    """A square matrix's inverse, in float64."""
    with one_thread() as torch:
        return torch.linalg.inv(torch.from_numpy(np.asarray(matrix, np.float64))).numpy()
