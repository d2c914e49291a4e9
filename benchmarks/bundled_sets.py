"""Anomaly sets built from scikit-learn's bundled UCI tables: a check beyond the dev sets.

Run: ``python benchmarks/bundled_sets.py DIR``, then ``python benchmarks/anomaly.py DIR``.

shared/adbench's 18 sets are where the score was developed, so its numbers there flatter
it. scikit-learn ships three of the UCI tables ODDS and ADBench build anomaly sets from,
and needs no network: this writes them into ``DIR/classical`` the way ODDS does, one
class as inliers and another downsampled to a few percent as outliers (seeded, so every
run writes the same files):

- ``optdigits``: the 8 x 8 digits, 1 to 9 inliers, 50 zeros outliers (built as ODDS builds
  its optdigits, on the 1,797 rows scikit-learn ships). Issue 39 found aecli's worst regret
  on ADBench's optdigits (0.42 below HBOS, trained on contaminated rows): the outliers are
  a tight cluster, each the others' neighbour, so neighbour terms rank them as normal.
- ``wdbc``: breast-cancer diagnostics, benign inliers, 10 malignant outliers (ADBench's WDBC).
- ``wine``: wine cultivars 2 and 3 inliers, 10 of cultivar 1 outliers (ODDS's wine).

These are small and few: a check of direction, not a benchmark to tune to.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SEED = 0
# name: (loader, the inlier test on the target, the outlier class, outliers kept)
SETS = {
    "optdigits": ("load_digits", lambda t: t != 0, 0, 50),
    "wdbc": ("load_breast_cancer", lambda t: t == 1, 0, 10),  # 0 = malignant
    "wine": ("load_wine", lambda t: t != 0, 0, 10),
}


def build(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows (float32) and labels (int8, 1 = outlier) of one set, inliers first."""
    import sklearn.datasets

    loader, inlier, outlier_class, kept = SETS[name]
    data = getattr(sklearn.datasets, loader)()
    x, target = np.asarray(data.data), np.asarray(data.target)
    rng = np.random.default_rng(SEED)
    outliers = np.sort(rng.choice(np.flatnonzero(target == outlier_class), kept, replace=False))
    rows = np.concatenate([np.flatnonzero(inlier(target)), outliers])
    y = np.zeros(len(rows), dtype=np.int8)
    y[-kept:] = 1
    return x[rows].astype(np.float32), y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where classical/*.npz are written")
    args = parser.parse_args()
    out = args.folder / "classical"
    out.mkdir(parents=True, exist_ok=True)
    for name in SETS:
        x, y = build(name)
        np.savez(out / f"{name}.npz", X=x, y=y)
        print(f"{out / name}.npz: {len(x)} rows x {x.shape[1]}, {y.mean():.1%} outliers")


if __name__ == "__main__":
    main()
