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

``--every-class`` writes, beside them, the same sets with each other class in turn as the
outliers (``digits1`` to ``digits9``, ``wine1`` and ``wine2``): the same tables, anomalies of
another kind; and iris, each species in turn (``iris0`` to ``iris2``). The nine digit sets show
whether a term that helps on the zeros (ink where other digits have none) hurts on the ones
(less ink than any other digit); ``iris1``'s outliers lie between the other two species, where
one Gaussian of the rows puts its centre.
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


def every_class() -> dict[str, tuple[str, object, int, int]]:
    """The sets of ``--every-class``: each other class of digits and wine as the outliers,
    and each iris species (5 of its 50 rows kept): one of them lies between the other two."""
    sets: dict[str, tuple[str, object, int, int]] = {}
    for name, classes in (("digits", range(1, 10)), ("wine", range(1, 3))):
        loader, _, _, kept = SETS["optdigits" if name == "digits" else "wine"]
        for k in classes:
            sets[f"{name}{k}"] = (loader, lambda t, k=k: t != k, k, kept)
    for k in range(3):
        sets[f"iris{k}"] = ("load_iris", lambda t, k=k: t != k, k, 5)
    return sets


def build(name: str, sets: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows (float32) and labels (int8, 1 = outlier) of one set, inliers first."""
    import sklearn.datasets

    loader, inlier, outlier_class, kept = (sets or SETS)[name]
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
    parser.add_argument(
        "--every-class", action="store_true", help="and each other class as the outliers too"
    )
    args = parser.parse_args()
    out = args.folder / "classical"
    out.mkdir(parents=True, exist_ok=True)
    sets = {**SETS, **every_class()} if args.every_class else SETS
    for name in sets:
        x, y = build(name, sets)
        np.savez(out / f"{name}.npz", X=x, y=y)
        print(f"{out / name}.npz: {len(x)} rows x {x.shape[1]}, {y.mean():.1%} outliers")


if __name__ == "__main__":
    main()
