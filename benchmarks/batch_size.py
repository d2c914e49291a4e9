"""Batch size and learning rate against the table's size: what ``TrainConfig.sized`` chooses.

Run: ``python benchmarks/batch_size.py [DIR] [--seeds 0,1]``.
Each table trains with the default flags but the batch and rate in the columns, and is
measured on 2000 held-out rows (the held-out error per value in the model's scaled units,
as training's loss) and by its fit seconds, every column in the same run. The shipped
digits stand for a small table (50 epochs of it are few steps); DIR, a folder of ``.npz``
tables with an ``X`` array (shared/adbench/classical), gives the larger ones: those of
at least 6096 rows (4096 to train on). The first column is the small tables' choice and
the column in bold is the large tables' one; ratios are against the first column.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from aecli import datasets
from aecli.config import LARGE_TABLE, TrainConfig
from aecli.diagnostics import row_terms
from aecli.io import Table
from aecli.training import ModelRequest, prepare

SETTINGS = ((64, 3e-3), (128, 3e-3), (128, 6e-3), (256, 6e-3))
HELD_OUT = 2000


def measure(train: np.ndarray, test: np.ndarray, batch: int, lr: float, seeds: list[int]):
    """Mean held-out error and fit seconds over the seeds."""
    errors, seconds = [], []
    for seed in seeds:
        config = TrainConfig(batch_size=batch, lr=lr, seed=seed)
        start = time.perf_counter()
        run = prepare(Table(train, None, (train.shape[1],)), ModelRequest(), config)
        fitted = run.execute().fitted
        seconds.append(time.perf_counter() - start)
        errors.append(float(row_terms(fitted, test)["fit_error"].mean()))
    return float(np.mean(errors)), float(np.mean(seconds))


def tables(folder: Path | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, train, test): the digits (small), then DIR's tables of 6096 rows or more."""
    rng = np.random.default_rng(0)
    digits = datasets.load("digits").values.astype(np.float32)
    order = rng.permutation(len(digits))
    found = [("digits", digits[order[360:]], digits[order[:360]])]
    for path in sorted(folder.glob("*.npz")) if folder else []:
        with np.load(path) as data:
            values = data["X"].astype(np.float32)
        if len(values) - HELD_OUT < LARGE_TABLE:
            continue
        order = np.random.default_rng(0).permutation(len(values))
        found.append((path.stem, values[order[HELD_OUT:]], values[order[:HELD_OUT]]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, nargs="?", help="a folder of .npz tables")
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    heads = [f"{b}, {lr:g}" for b, lr in SETTINGS]
    print("held-out error (scaled, per value) and fit seconds; ratios against 64 at 3e-3")
    print(f"{'table':<18}{'rows':>7}  " + "".join(f"{h:>28}" for h in heads))
    for name, train, test in tables(args.folder):
        cells, base = [], None
        for batch, lr in SETTINGS:
            error, seconds = measure(train, test, batch, lr, seeds)
            base = base or (error, seconds)
            cells.append(
                f"{error:.4g} x{error / base[0]:.2f} {seconds:.2f}s x{seconds / base[1]:.2f}"
            )
        print(f"{name:<18}{len(train):>7}  " + "".join(f"{c:>28}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
