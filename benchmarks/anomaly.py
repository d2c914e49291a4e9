"""Anomaly detection on real labelled tables: aecli's defaults against the standard detectors.

Run: ``python benchmarks/anomaly.py DIR [--seeds 0,1] [--variant NAME=TRAIN_FLAGS[|SCORE_FLAGS]]``.

DIR holds ``.npz`` files (arrays ``X`` and ``y``, 1 = outlier) or ODDS ``.mat`` files (needs
scipy). The protocol is PyOD's benchmark: for each seed a 60/40 split with scikit-learn's
``train_test_split(X, y, test_size=0.4, random_state=seed)``, fit on the train rows without
their labels, AUROC of the scores on the test rows.

aecli is run exactly as a user runs it: ``aecli train train.npy -o m.safetensors`` then
``aecli score m.safetensors test.npy`` (in-process, through the CLI's own ``main``), with no
flags unless a ``--variant`` adds some. Peers, when installed, run beside it in the same
process with their defaults: PyOD's ``AutoEncoder()`` and ``VAE()``, and scikit-learn's
``IsolationForest()`` (seeded). The table prints AUROC per dataset and peer, the mean row,
and the fit seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

Detector = Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (train, test, seed) -> scores


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if path.suffix == ".npz":
        with np.load(path) as data:
            return data["X"].astype(np.float32), data["y"].astype(int).ravel()
    from scipy.io import loadmat

    data = loadmat(path)
    return np.asarray(data["X"], dtype=np.float32), np.asarray(data["y"]).astype(int).ravel()


def aecli_detector(train_flags: str, score_flags: str) -> Detector:
    """aecli train + aecli score through the CLI entry point, on .npy files."""
    from aecli.cli import main

    def run(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            np.save(folder / "train.npy", train)
            np.save(folder / "test.npy", test)
            model, scores = str(folder / "m.safetensors"), str(folder / "scores.csv")
            argv = ["train", str(folder / "train.npy"), "-o", model, "-q"]
            argv += ["--seed", str(seed), *shlex.split(train_flags)]
            _check(main(argv), argv)
            argv = ["score", model, str(folder / "test.npy"), "-o", scores]
            _check(main([*argv, *shlex.split(score_flags)]), argv)
            return np.loadtxt(scores, delimiter=",", skiprows=1, ndmin=2)[:, 0]

    return run


def _check(code: int, argv: list[str]) -> None:
    if code != 0:
        raise SystemExit(f"aecli {' '.join(argv)} exited {code}")


def peers() -> dict[str, Detector]:
    found: dict[str, Detector] = {}
    try:
        from pyod.models.auto_encoder import AutoEncoder
        from pyod.models.vae import VAE
    except ImportError:
        pass
    else:

        def pyod(cls: type) -> Detector:
            def run(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
                detector = cls(random_state=seed, verbose=0)
                with contextlib.redirect_stdout(io.StringIO()):
                    detector.fit(train)
                return detector.decision_function(test)

            return run

        found["PyOD AE"], found["PyOD VAE"] = pyod(AutoEncoder), pyod(VAE)
    try:
        from sklearn.ensemble import IsolationForest
    except ImportError:
        pass
    else:

        def iforest(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
            return -IsolationForest(random_state=seed).fit(train).score_samples(test)

        found["IForest"] = iforest
    return found


def split(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    try:
        from sklearn.model_selection import train_test_split
    except ImportError:  # the same proportions without scikit-learn (not PyOD's exact rows)
        order = np.random.default_rng(seed).permutation(len(x))
        cut = len(x) - int(np.ceil(0.4 * len(x)))
        return x[order[:cut]], x[order[cut:]], y[order[:cut]], y[order[cut:]]
    return tuple(train_test_split(x, y, test_size=0.4, random_state=seed))


def auroc(y: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUROC with ties counted half (equals sklearn's roc_auc_score)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder of .npz (X, y) or ODDS .mat files")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=TRAIN_FLAGS[|SCORE_FLAGS]",
        help="an extra aecli row, e.g. 'vae=--kind vae --loss mse|--elbo'",
    )
    parser.add_argument("--no-peers", action="store_true", help="aecli rows only")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    detectors: dict[str, Detector] = {"aecli": aecli_detector("", "")}
    for spec in args.variant:
        name, _, flags = spec.partition("=")
        train_flags, _, score_flags = flags.partition("|")
        detectors[f"aecli {name}"] = aecli_detector(train_flags, score_flags)
    if not args.no_peers:
        detectors.update(peers())
    files = sorted(p for p in args.folder.iterdir() if p.suffix in (".npz", ".mat"))
    if not files:
        raise SystemExit(f"{args.folder}: no .npz or .mat files")
    names = list(detectors)
    auc = {name: [] for name in names}
    secs = {name: [] for name in names}
    rows = []
    for path in files:
        x, y = load(path)
        cells, times = [], []
        for name, detect in detectors.items():
            aucs, took = [], 0.0
            for seed in seeds:
                x_train, x_test, _, y_test = split(x, y, seed)
                start = time.perf_counter()
                scores = detect(x_train, x_test, seed)
                took += time.perf_counter() - start
                aucs.append(auroc(y_test, scores))
            auc[name].append(float(np.mean(aucs)))
            secs[name].append(took / len(seeds))
            cells.append(f"{auc[name][-1]:.3f}")
            times.append(f"{secs[name][-1]:.1f}")
        rows.append((f"{path.stem} ({x.shape[0]}x{x.shape[1]})", cells, times))
        print(f"# {path.stem}: " + ", ".join(f"{n} {c}" for n, c in zip(names, cells)), flush=True)
    print(f"\nAUROC on the test rows, mean of seeds {args.seeds} (fit seconds in brackets)\n")
    print("| dataset | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    for label, cells, times in rows:
        print(f"| {label} | " + " | ".join(f"{c} ({t})" for c, t in zip(cells, times)) + " |")
    means = [f"**{np.mean(auc[n]):.3f}** ({np.mean(secs[n]):.1f})" for n in names]
    print("| mean | " + " | ".join(means) + " |")


if __name__ == "__main__":
    main()
