"""The PCA baseline: orthonormal components, exact at full rank, best linear subspace."""

from __future__ import annotations

import numpy as np

from aecli.pca import PCA


def test_components_are_orthonormal_and_full_rank_is_exact() -> None:
    values = np.random.default_rng(0).normal(size=(40, 5))
    pca = PCA.fit(values, 5)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(5), atol=1e-10)
    np.testing.assert_allclose(pca.reconstruct(values), values, atol=1e-10)


def test_one_component_finds_the_dominant_direction() -> None:
    rng = np.random.default_rng(1)
    t = rng.normal(size=(500, 1))
    values = t @ np.array([[3.0, 4.0]]) / 5 * 10 + 0.01 * rng.normal(size=(500, 2))
    direction = PCA.fit(values, 1).components[0]
    assert abs(direction @ np.array([0.6, 0.8])) > 0.999
