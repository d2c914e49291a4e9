"""The score's two Gaussians: a robust mean and precision of the codes and of the residuals.

One reweighting step of the minimum covariance determinant estimator keeps the anomalies
an unlabelled table holds from widening what "normal" looks like (docs/anomaly.md).
"""

from __future__ import annotations

import numpy as np

from aecli import principal

KEEP_SHARE = 0.75  # robust Gaussians are refitted on this share of rows, the nearest ones
RIDGE = 1e-2  # added to a covariance's diagonal, as a share of its mean variance


def robust_gaussian(
    rows: np.ndarray, diagonal: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and precision of rows, refitted once on the KEEP_SHARE nearest of them.

    One reweighting step of the minimum covariance determinant idea (Rousseeuw
    & Van Driessen 1999, with h = 0.75 n): a first fit on every row, then a
    second on the three quarters nearest to it, so that up to a quarter of the
    rows (the anomalies an unlabelled table holds) do not widen the normal
    profile. A ridge keeps a unit that never varies (a dead code unit, a column
    reconstructed exactly) from making the covariance singular. Returns the
    squared distances of all rows under the second fit too.
    """
    from aecli.fitted import mahalanobis

    mean, precision = _gaussian(rows, diagonal)
    distance = mahalanobis(rows, mean, precision)
    near = distance <= np.quantile(distance, KEEP_SHARE)
    mean, precision = _gaussian(rows[near], diagonal)
    return mean, precision, mahalanobis(rows, mean, precision)


def _gaussian(rows: np.ndarray, diagonal: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and ridged inverse covariance (float32), accumulated in float64 blocks."""
    width = rows.shape[1]
    mean = rows.astype(np.float64).mean(0) if len(rows) else np.zeros(width)
    blocks = (rows[start : start + 8192] for start in range(0, len(rows), 8192))
    if diagonal:
        moment = np.zeros(width)
        for block in blocks:
            moment += np.square(block.astype(np.float64) - mean).sum(0)
    else:  # one thread's sums: the file's bytes do not hang on the process's threads
        moment = principal.scatter(blocks, mean)
    cov = moment / max(len(rows) - 1, 1)
    variances = cov if diagonal else np.diag(cov)
    ridge = RIDGE * max(float(variances.mean()), 1e-12)
    precision = 1.0 / (cov + ridge) if diagonal else principal.inverse(cov + ridge * np.eye(width))
    return mean.astype(np.float32), precision.astype(np.float32)
