"""Thread-independent linear algebra: right against numpy, and a model file that does not
hang on how many BLAS threads the process has."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aecli import principal


def test_product_scatter_and_inverse_match_their_formulas() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(5, 3))
    np.testing.assert_allclose(principal.product(a, b), a @ b, rtol=1e-12, atol=1e-12)
    rows = rng.normal(size=(50, 4)) + 3.0
    mean = rows.mean(0)
    blocks = [rows[:17], rows[17:40], rows[40:]]
    expected = (rows - mean).T @ (rows - mean)
    np.testing.assert_allclose(principal.scatter(blocks, mean), expected, rtol=1e-12)
    matrix = expected / 49 + 0.1 * np.eye(4)
    np.testing.assert_allclose(principal.inverse(matrix) @ matrix, np.eye(4), atol=1e-10)


def test_eigh_is_largest_first_and_leaves_the_threads_as_they_were() -> None:
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    matrix = basis @ np.diag([1.0, 5.0, 0.5, 3.0]) @ basis.T
    before = torch.get_num_threads()
    values, vectors = principal.eigh(matrix)
    assert torch.get_num_threads() == before
    np.testing.assert_allclose(values, [5.0, 3.0, 1.0, 0.5], rtol=1e-10)
    np.testing.assert_allclose(matrix @ vectors, vectors * values, atol=1e-10)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: no second thread to differ")
def test_model_file_is_the_same_bytes_on_one_blas_thread_or_two(tmp_path: Path) -> None:
    # 256 columns: numpy's eigensolver and inverse on two OpenBLAS threads gave the density
    # axes, the residual's precision and the score percentiles other last bits than on one.
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(600, 16)) @ rng.normal(size=(16, 256))
    rows += 0.1 * rng.normal(size=rows.shape)
    data = tmp_path / "wide.npy"
    np.save(data, rows.astype(np.float32))
    files = []
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        out = tmp_path / f"m{threads}.safetensors"
        args = ["train", data, "-o", out, "--epochs", "1", "--seed", "0", "--threads", "1"]
        command = [sys.executable, "-m", "aecli", *map(str, args)]
        subprocess.run(command, check=True, capture_output=True, env=env)
        files.append(out.read_bytes())
    assert files[0] == files[1]
