"""Synthetic anomalies of ADBench's four types on real normal rows: a check by kind, not by set.

Run: ``python benchmarks/anomaly_types.py DIR OUT``, then ``python benchmarks/anomaly.py OUT``.

The dev sets say how aecli does on 18 tables; held-out tables differ from them in ways no
one listed. ADBench (Han et al. 2022, section 4.3) asks the question by kind instead: it
keeps each table's normal rows as they are distributed and plants anomalies of one type
in them, so that a detector's result says which kind of anomaly it sees, on any table.
This writes, for every table in DIR (``.npz`` with ``X`` and ``y``; tables up to
``MAX_COLUMNS`` wide), one set per type into ``OUT/<type>/``, with as many anomalies as
the table has (ADBench's choice), so that ``anomaly.py`` prints a family per type:

- ``local``: a Gaussian mixture fitted to the normal rows (components chosen by BIC, 1
  to 9), normal rows drawn from it, anomalies from it with every covariance times 5
  (ADBench's alpha): rows near the normal modes but looser than them.
- ``clustered``: the same mixture, anomalies from it with every mean times 5 (on
  z-scored rows): tight groups away from the normal modes, each anomaly the others'
  neighbour. This is what sinks neighbour methods trained on raw rows.
- ``global``: the real normal rows; anomalies uniform over each column's range widened
  by 10% either side: scattered, each far from the rest in some column.
- ``dependency``: the real normal rows; anomalies with each column drawn independently
  from that column's normal values: every value ordinary, their combination not (ADBench
  fits a vine copula for the normal rows and samples the marginals independently; the
  marginals drawn as they are keep discrete columns discrete, so no detector can tell
  anomalies by their values' form).

The mixtures are fitted to z-scored rows (at most ``FIT_ROWS``, seeded), and the two
mixture types draw their normal rows from the mixture too, as ADBench does: anomalies and
normal rows then come from one model, and a detector cannot tell them apart by how
smooth a sample is. Seeded: every run writes the same files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from anomaly import load  # benchmarks/, beside this script

SEED = 0
ALPHA_LOCAL = 5.0  # covariances times this (ADBench)
ALPHA_CLUSTER = 5.0  # means times this, on z-scored rows (ADBench)
WIDEN = 0.1  # global anomalies: each column's range widened by this share either side
MAX_COLUMNS = 100  # a full-covariance mixture on wider rows (embeddings) says little
FIT_ROWS = 5000
TYPES = ("local", "clustered", "global", "dependency")


def mixture(normal: np.ndarray, seed: int) -> object:
    """A Gaussian mixture of the z-scored normal rows, its size chosen by BIC."""
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(seed)
    rows = normal[rng.choice(len(normal), min(len(normal), FIT_ROWS), replace=False)]
    fits = [
        GaussianMixture(k, covariance_type="full", reg_covar=1e-3, random_state=seed).fit(rows)
        for k in range(1, max(2, min(10, len(rows) // 10 + 1)))  # 10 rows a component
    ]
    return min(fits, key=lambda fit: fit.bic(rows))


def draw(fit: object, count: int, seed: int) -> np.ndarray:
    fit.random_state = seed  # type: ignore[attr-defined]
    return fit.sample(count)[0]  # type: ignore[attr-defined]


def build(x: np.ndarray, y: np.ndarray, kind: str, seed: int = SEED) -> tuple[np.ndarray, ...]:
    """Rows (float32) and labels (int8, 1 = anomaly) of one set of one type, normal first."""
    normal = x[y == 0].astype(np.float64)
    count = int(y.sum())
    rng = np.random.default_rng(seed)
    if kind in ("local", "clustered"):
        mean, spread = normal.mean(0), normal.std(0)
        spread[spread == 0] = 1.0
        fit = mixture((normal - mean) / spread, seed)
        inliers = draw(fit, len(normal), seed)
        if kind == "local":
            fit.covariances_ = fit.covariances_ * ALPHA_LOCAL  # type: ignore[attr-defined]
        else:
            fit.means_ = fit.means_ * ALPHA_CLUSTER  # type: ignore[attr-defined]
        outliers = draw(fit, count, seed + 1)
        inliers, outliers = inliers * spread + mean, outliers * spread + mean
    elif kind == "global":
        low, high = normal.min(0), normal.max(0)
        pad = WIDEN * (high - low)
        inliers = normal
        outliers = rng.uniform(low - pad, high + pad, size=(count, normal.shape[1]))
    elif kind == "dependency":
        inliers = normal
        picks = rng.integers(0, len(normal), size=(count, normal.shape[1]))
        outliers = normal[picks, np.arange(normal.shape[1])]
    else:
        raise ValueError(f"unknown type {kind!r}; one of {', '.join(TYPES)}")
    rows = np.concatenate([inliers, outliers]).astype(np.float32)
    labels = np.concatenate([np.zeros(len(inliers)), np.ones(count)]).astype(np.int8)
    return rows, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="tables: .npz files with X and y")
    parser.add_argument("out", type=Path, help="where <type>/<set>.npz are written")
    parser.add_argument("--types", default=",".join(TYPES))
    args = parser.parse_args()
    for path in sorted(args.folder.rglob("*.npz")):
        x, y = load(path)  # as the benchmark reads it
        if x.ndim != 2 or x.shape[1] > MAX_COLUMNS or not 0 < y.sum() < len(y):
            continue
        for kind in args.types.split(","):
            rows, labels = build(x, y, kind)
            (args.out / kind).mkdir(parents=True, exist_ok=True)
            np.savez(args.out / kind / path.name, X=rows, y=labels)
            print(f"{kind}/{path.name}: {len(rows)} rows x {rows.shape[1]}, "
                  f"{labels.mean():.1%} anomalies")  # fmt: skip


if __name__ == "__main__":
    main()
