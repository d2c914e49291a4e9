"""Anomaly detection on real labelled tables, in both training regimes, beside the standard peers.

Run: ``python benchmarks/anomaly.py DIR [--seeds 0,1] [--regimes contaminated,clean]
[--variant NAME=TRAIN_FLAGS[|SCORE_FLAGS]] [--no-peers] [--rows N]``.

DIR holds ``.npz`` files (arrays ``X`` and ``y``, 1 = outlier), in it or in its subfolders
(``shared/adbench/``'s ``classical`` and ``embeddings``: each subfolder is a family), or
ODDS ``.mat`` files (needs scipy). The protocol is ADBench's (shared/adbench/README.md):
for each seed ``train_test_split(X, y, test_size=0.4, stratify=y, random_state=seed)``;
fit on the train rows without labels, all of them (``contaminated``) or those with y == 0
(``clean``); AUROC of the scores on the test rows.

aecli runs as a user runs it: ``aecli train train.npy -o m.safetensors --seed S`` then ``aecli
score m.safetensors test.npy``, through the CLI's own ``main``, with no flags unless a
``--variant`` adds some. The peers (the benchmark extra: ``pip install '.[bench]' -c
constraints.txt``) run in the same process with their defaults on rows z-scored by the train
split: PyOD's IForest, KNN, LOF, OCSVM, HBOS, COPOD, ECOD and PCA, and ``ADEngine`` (the
detector PyOD picks for the rows by itself). It prints, per family and regime: the mean AUROC
of each detector and of each set's best peer in hindsight, how many splits aecli wins against
the best peer of that split, its worst regret (the best peer's AUROC minus aecli's on one set,
seeds averaged), the seed spread (on the first seed's split, aecli's AUROC with ``--seed`` the
first and then the second seed, nothing else changed), and the seconds to fit and score.
``--rows N`` first cuts each set of more than N rows to a stratified sample of N, by a fixed
seed: small tables, of which the held-out sets have many, from the same sources.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

Detector = Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (train, test, seed) -> scores
REGIMES = ("contaminated", "clean")


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
    """PyOD's standard detectors with their defaults, on z-scored rows; {} without PyOD."""
    try:
        from pyod.models.copod import COPOD
        from pyod.models.ecod import ECOD
        from pyod.models.hbos import HBOS
        from pyod.models.iforest import IForest
        from pyod.models.knn import KNN
        from pyod.models.lof import LOF
        from pyod.models.ocsvm import OCSVM
        from pyod.models.pca import PCA
    except ImportError:
        return {}
    makers = {
        "IForest": lambda seed: IForest(random_state=seed),
        "KNN": lambda seed: KNN(),
        "LOF": lambda seed: LOF(),
        "OCSVM": lambda seed: OCSVM(),
        "HBOS": lambda seed: HBOS(),
        "COPOD": lambda seed: COPOD(),
        "ECOD": lambda seed: ECOD(),
        "PCA": lambda seed: PCA(random_state=seed),
    }

    def pyod(make: Callable[[int], object]) -> Detector:
        def run(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
            train64, test64 = train.astype(np.float64), test.astype(np.float64)
            mean, spread = train64.mean(0), train64.std(0)
            spread[spread == 0] = 1.0
            detector = make(seed)
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                detector.fit((train64 - mean) / spread)  # type: ignore[attr-defined]
                return detector.decision_function((test64 - mean) / spread)  # type: ignore[attr-defined]

        return run

    detectors = {name: pyod(make) for name, make in makers.items()}
    if Engine.available():
        detectors["ADEngine"] = pyod(Engine)
    return detectors


class Engine:
    """PyOD's ``ADEngine``, the detector PyOD picks for the training rows by itself, as a
    peer: ``detect`` without its report (profile, plan, build, fit), then the test rows."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.detector: object = None

    @staticmethod
    def available() -> bool:
        try:
            from pyod.utils.ad_engine import ADEngine  # noqa: F401
        except ImportError:
            return False
        return True

    def fit(self, rows: np.ndarray) -> Engine:
        from pyod.utils.ad_engine import ADEngine

        engine = ADEngine(random_state=self.seed)
        self.detector = engine.build_detector(engine.plan_detection(engine.profile_data(rows)))
        self.detector.fit(rows)  # type: ignore[attr-defined]
        return self

    def decision_function(self, rows: np.ndarray) -> np.ndarray:
        return self.detector.decision_function(rows)  # type: ignore[attr-defined]


def split(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    from sklearn.model_selection import train_test_split

    return tuple(train_test_split(x, y, test_size=0.4, stratify=y, random_state=seed))


def cut(x: np.ndarray, y: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified sample of ``rows`` rows, by a fixed seed (``--rows``): the same table,
    as few rows as many held-out ones have (a third of ADBench's tables have under 800)."""
    from sklearn.model_selection import train_test_split

    kept, _, y_kept, _ = train_test_split(x, y, train_size=rows, stratify=y, random_state=0)
    return kept, y_kept


def auroc(y: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUROC with ties counted half (equals sklearn's roc_auc_score)."""
    from scipy.stats import rankdata

    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    ranks = rankdata(scores)
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def families(folder: Path) -> dict[str, list[Path]]:
    """Data files by family: each subfolder is one, files directly in DIR are 'tables'."""
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix in (".npz", ".mat"):
            family = path.parent.name if path.parent != folder else "tables"
            found.setdefault(family, []).append(path)
    return found


def run_all(args: argparse.Namespace) -> list[dict[str, object]]:
    """One record per (file, seed, regime, detector): AUROC and fit seconds."""
    seeds = [int(s) for s in args.seeds.split(",")]
    detectors: dict[str, Detector] = {"aecli": aecli_detector("", "")}
    for spec in args.variant:
        name, _, flags = spec.partition("=")
        train_flags, _, score_flags = flags.partition("|")
        detectors[f"aecli {name}"] = aecli_detector(train_flags, score_flags)
    if not args.no_peers:
        detectors.update(peers())
    records = []
    for family, paths in families(args.folder).items():
        for path in paths:
            x, y = load(path)
            if args.rows and len(y) > args.rows:
                x, y = cut(x, y, args.rows)
                print(f"# {family}/{path.stem}: cut to {len(y)} rows, {int(y.sum())} outliers")
            for seed in seeds:
                x_train, x_test, y_train, y_test = split(x, y, seed)
                for regime in args.regimes.split(","):
                    rows = x_train if regime == "contaminated" else x_train[y_train == 0]
                    cells = []
                    for name, detect in detectors.items():
                        start = time.perf_counter()
                        scores = detect(rows, x_test, seed)
                        took = time.perf_counter() - start
                        value = auroc(y_test, scores)
                        records.append(dict(family=family, set=path.stem, seed=seed,
                                            regime=regime, detector=name, auroc=value,
                                            seconds=took))  # fmt: skip
                        cells.append(f"{name} {value:.3f}")
                        if name.startswith("aecli") and seed == seeds[0] and len(seeds) > 1:
                            # the same split, the next --seed: what the seed alone moves
                            other = auroc(y_test, detect(rows, x_test, seeds[1]))
                            records.append(dict(family=family, set=path.stem, seed=seed,
                                                regime=regime, detector=f"{name} @{seeds[1]}",
                                                auroc=other, seconds=0.0))  # fmt: skip
                    print(f"# {family}/{path.stem} seed {seed} {regime}: " + ", ".join(cells),
                          flush=True)  # fmt: skip
    return records


def report(records: list[dict[str, object]], seeds: list[int]) -> None:
    """The table per family and regime (see the module docstring)."""
    reruns = [r for r in records if "@" in str(r["detector"])]
    records = [r for r in records if "@" not in str(r["detector"])]
    detectors = list(dict.fromkeys(str(r["detector"]) for r in records))
    others = [d for d in detectors if not d.startswith("aecli")]
    groups = sorted({(str(r["family"]), str(r["regime"])) for r in records})
    print(f"\nMean AUROC on the test rows, seeds {','.join(map(str, seeds))}\n")
    print("| family | regime | " + " | ".join(detectors) + " | best peer | each set's best |")
    print("| --- | --- |" + " ---: |" * len(detectors) + " --- | ---: |")
    details = []
    for family, regime in groups:
        rows = [r for r in records if r["family"] == family and r["regime"] == regime]
        mean = {d: _mean(rows, d) for d in detectors}
        best = max(others, key=lambda d: mean[d]) if others else None
        cells = " | ".join(f"{mean[d]:.3f}" for d in detectors)
        hindsight = f"{_hindsight(rows, others):.3f}" if others else "-"
        print(f"| {family} | {regime} | {cells} | {best or '-'} | {hindsight} |")
        again = [r for r in reruns if r["family"] == family and r["regime"] == regime]
        for name in (d for d in detectors if d.startswith("aecli")):
            details.append(f"- {family}, {regime}, {name}: " + _facts(rows, again, name, best))
    print()
    print("\n".join(details))


def _mean(rows: list[dict[str, object]], detector: str, key: str = "auroc") -> float:
    return float(np.mean([float(r[key]) for r in rows if r["detector"] == detector]))  # type: ignore[arg-type]


def _hindsight(rows: list[dict[str, object]], peers: list[str]) -> float:
    """The mean over sets of the best peer's AUROC on each set (seeds averaged): a user who
    picked, for every table, whichever standard detector turned out best on its labels. Beside
    the best single peer, how far apart the peers are; a lead over it, what no choice among
    them could have given."""
    best = []
    for name in sorted({str(r["set"]) for r in rows}):
        held = [r for r in rows if r["set"] == name]
        present = {str(r["detector"]) for r in held}
        best.append(max(_mean(held, p) for p in peers if p in present))
    return float(np.mean(best))


def _facts(
    rows: list[dict[str, object]], again: list[dict[str, object]], name: str, best: str | None
) -> str:
    """Lead, wins, worst regret, seed spread and fit seconds of one aecli row."""
    cell = {(r["set"], r["seed"], r["detector"]): float(r["auroc"]) for r in rows}  # type: ignore[arg-type]
    splits = sorted({(r["set"], r["seed"]) for r in rows})
    peers = sorted({str(r["detector"]) for r in rows if not str(r["detector"]).startswith("aecli")})
    text = ""
    if best is not None:
        top = {split: max(cell[(*split, p)] for p in peers) for split in splits}
        wins = sum(cell[(*split, name)] >= top[split] for split in splits)
        regret = {}
        for s, k in splits:
            regret.setdefault(s, []).append(top[(s, k)] - cell[(s, k, name)])
        worst = max(regret, key=lambda s: np.mean(regret[s]))
        text += (
            f"lead {_mean(rows, name) - _mean(rows, best):+.3f} over {best}; wins {wins} of "
            f"{len(splits)} splits; worst regret {np.mean(regret[worst]):.3f} ({worst}); "
        )
    first = {
        r["set"]: float(r["auroc"])  # type: ignore[arg-type]
        for r in again
        if str(r["detector"]).split(" @")[0] == name
    }
    if first:
        seed0 = min(r["seed"] for r in rows)  # type: ignore[type-var]
        spread = [abs(first[s] - cell[(s, seed0, name)]) for s in first]
        text += f"seed spread mean {np.mean(spread):.3f}, max {np.max(spread):.3f}; "
    secs = _mean(rows, name, "seconds")
    peer = f" (IForest {_mean(rows, 'IForest', 'seconds'):.2f} s)" if "IForest" in peers else ""
    return text + f"fit and score {secs:.2f} s{peer}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder of .npz (X, y) or ODDS .mat files")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=TRAIN_FLAGS[|SCORE_FLAGS]",
        help="an extra aecli row, e.g. 'vae=--kind vae --loss mse|--elbo'",
    )
    parser.add_argument("--no-peers", action="store_true", help="aecli rows only")
    parser.add_argument(
        "--rows", type=int, default=0, help="cut each larger set to this many rows (stratified)"
    )
    args = parser.parse_args()
    records = run_all(args)
    if not records:
        raise SystemExit(f"{args.folder}: no .npz or .mat files")
    report(records, [int(s) for s in args.seeds.split(",")])


if __name__ == "__main__":
    main()
