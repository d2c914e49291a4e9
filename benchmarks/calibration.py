"""How many rows ``score --contamination q`` flags, against the share asked.

Run: ``python benchmarks/calibration.py DIR [--seeds 0,1]`` (DIR as benchmarks/anomaly.py
reads it: ``.npz`` files of ``X`` and ``y``, 1 = outlier, ADBench's 60/40 splits).

Two questions a user asks of the flag, each through the CLI as a user runs it:

- **clean**: trained on the train split's normal rows, ``aecli score --contamination q`` on
  the test split's normal rows, for q = 0.1 and 0.01: the share flagged should be about q
  (docs/anomaly.md promises at most about q).
- **contaminated**: trained on every train row, q the train split's share of anomalies: the
  share of test rows flagged, and how many of them are anomalies (precision).

Beside each, in the same run, what the threshold of the rows given alone would flag (the
(1 - q) percentile of the scores of the rows ``train`` was given, which ``score`` read
before the held-out rows raised it, docs/anomaly.md "Choosing a threshold"): the baseline.
Scores are the same either way; only the threshold differs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
from anomaly import families, load, split

CLEAN_SHARES = (0.1, 0.01)


def flags(
    train: np.ndarray, test: np.ndarray, shares: list[float], seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per share: (flagged by aecli score --contamination, flagged by the rows given alone)."""
    from aecli import modelfile
    from aecli.cli import main
    from aecli.diagnostics import score_quantiles, threshold_for

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "train.npy", train)
        np.save(folder / "test.npy", test)
        model = str(folder / "m.safetensors")
        with contextlib.redirect_stderr(io.StringIO()):
            if main(["train", str(folder / "train.npy"), "-o", model, "-q", "--seed", str(seed)]):
                raise SystemExit("aecli train failed")
        given = score_quantiles(modelfile.load(model), train)["score"]  # the rows given alone
        out = []
        for share in shares:
            scored = folder / "scores.csv"
            argv = ["score", model, str(folder / "test.npy"), "-o", str(scored)]
            if main([*argv, "--contamination", str(share)]):
                raise SystemExit("aecli score failed")
            table = np.loadtxt(scored, delimiter=",", skiprows=1, ndmin=2)
            out.append((table[:, 1] == 1, table[:, 0] > threshold_for(given, share)))
    return out


def run(path: Path, seed: int) -> dict[str, float]:
    """One split's shares flagged, in both regimes, with the baseline's beside them."""
    x, y = load(path)
    train, test, y_train, y_test = split(x, y, seed)
    record: dict[str, float] = {"rows": float((y_train == 0).sum()), "columns": x.shape[1]}
    normal = test[y_test == 0]
    for share, (now, given) in zip(
        CLEAN_SHARES, flags(train[y_train == 0], normal, list(CLEAN_SHARES), seed)
    ):
        record[f"clean {share}"], record[f"clean {share} given"] = now.mean(), given.mean()
    share = float(y_train.mean())
    ((now, given),) = flags(train, test, [share], seed)
    record["q"] = share
    record["flagged"], record["flagged given"] = now.mean(), given.mean()
    record["precision"] = float(y_test[now].mean()) if now.any() else float("nan")
    record["precision given"] = float(y_test[given].mean()) if given.any() else float("nan")
    return record


def main() -> None:
    """The table: one row per set, seeds averaged, and the median over the sets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    keys = ["clean 0.1", "clean 0.01", "flagged", "precision"]
    found = families(args.folder)
    if not found:
        raise SystemExit(f"{args.folder}: no .npz or .mat files")
    print("Share of test rows flagged: aecli score --contamination q (the rows given alone)")
    print()
    print("| set (normal train rows x columns) | clean, q = 0.1 | clean, q = 0.01 | raw rows: q "
          "| flagged | precision |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for paths in found.values():
        for path in paths:
            records = [run(path, seed) for seed in seeds]
            mean = {k: float(np.nanmean([r[k] for r in records])) for k in records[0]}
            rows.append(mean)
            c = cells(mean, keys)
            size = f"{mean['rows']:.0f} x {mean['columns']:.0f}"
            line = f"| {path.stem} ({size}) | {c[0]} | {c[1]} | {mean['q']:.3f} | {c[2]} | {c[3]} |"
            print(line, flush=True)
    c = cells({k: float(np.nanmedian([r[k] for r in rows])) for k in rows[0]}, keys)
    print(f"| median | {c[0]} | {c[1]} | | {c[2]} | {c[3]} |")


def cells(values: dict[str, float], keys: list[str]) -> list[str]:
    """Each value beside the rows-given baseline's, in brackets."""
    return [f"{values[k]:.3f} ({values[k + ' given']:.3f})" for k in keys]


if __name__ == "__main__":
    main()
