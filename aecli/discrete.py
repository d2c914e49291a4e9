"""The anomaly score's sixth term: how rare a row's value is in each discrete column.

A column of integers that takes a few values only (a category's code, a one-hot flag, a
count, a pixel's 17 grey levels) is discrete: the share of training rows that hold a value
is that value's density (attribute value frequency, Koufakis et al. 2007). The density
term (aecli/density.py) reads continuous structure along principal components, which mix
columns and blur which of its few values a row took; where anomalies come as a cluster
among the training rows (optdigits' zeros, each other's neighbours and learnt by the
autoencoder as one more digit), a value that few rows take in some column is what still
marks them (issue 39: measured in docs/anomaly.md). Columns of non-integer values (image
embeddings, measurements) are never discrete, so on them the score is the five terms.

The term is ``sum_c -log((p_c(x_c) + a) / (1 + a))``, p_c the share of training rows with the
row's value in column c, smoothed by one row per value (``Discrete.rarity``): a training row
and a new copy of it score alike, as in the neighbour terms. ``a`` (format 11) is HBOS's
regulariser (Goldstein & Dengel 2012): a value held by far fewer than a tenth of the rows
counts about -log a, however few hold it, so the term counts the columns in which a row is
rare rather than how rare its rarest value is, which grows with log n and lets one column's
stray value outweigh many (docs/anomaly.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVELS = 32  # a column of integers with at most this many distinct values is discrete

# The share added to each value's share before its log (format 11; 0 in files before it, which
# count -log p whole): HBOS's default regulariser, where a rare value stops counting for more.
SATURATION = 0.1


@dataclass
class Discrete:
    """The discrete columns, their values and how many training rows hold each."""

    columns: np.ndarray  # int64 [C]: the discrete inputs, ascending
    levels: np.ndarray  # float32 [C, LEVELS]: each column's values, ascending, the last repeated
    counts: np.ndarray  # float32 [C, LEVELS]: rows with each value; 0 where a value is repeated
    saturation: float = 0.0  # ``SATURATION`` from format 11; 0 before: each -log p whole

    def rarity(self) -> tuple[np.ndarray, np.ndarray]:
        """How rare each value is (0 where repeated) and a value never seen, float64.

        A value k of n rows hold, in a column of m values, has the share p = k / (n + m):
        one row added to each value, the row itself among the k, which is what a training
        row gets against the other rows, so a training row scores as a new copy of it does.
        A value never seen has p = 1 / (n + m + 1), a value the row alone would hold. Its
        rarity is -log((p + a) / (1 + a)), a the ``saturation``: 0 for the commonest value a
        column could have (p = 1), about -log a for any value far rarer than a.
        """
        counts = self.counts.astype(np.float64)
        total = counts.sum(1, keepdims=True) + (counts > 0).sum(1, keepdims=True)
        share = np.maximum(counts, 1.0) / total
        rarity = np.where(counts > 0, self.surprise(share), 0.0)
        return rarity, self.surprise(1.0 / (total[:, 0] + 1.0))

    def surprise(self, share: np.ndarray) -> np.ndarray:
        """-log((share + a) / (1 + a)), a the ``saturation``: -log share where a is 0."""
        a = float(self.saturation)
        return np.log1p(a) - np.log(share + a) if a > 0 else -np.log(share)

    def term(self, rows: np.ndarray) -> np.ndarray:
        """The term for raw rows (float32 [rows, inputs]), in float64; a NaN matches no
        value, as a value never seen."""
        rarity, unseen = self.rarity()
        out = np.zeros(len(rows), dtype=np.float64)
        for c, column in enumerate(self.columns.tolist()):
            values = np.asarray(rows[:, column], dtype=np.float32)
            index = np.minimum(np.searchsorted(self.levels[c], values), LEVELS - 1)
            seen = self.levels[c][index] == values
            out += np.where(seen, rarity[c][index], unseen[c])
        return out


def fit(rows: np.ndarray) -> Discrete | None:
    """The discrete columns of raw rows and how many rows hold each value; None where no
    column is discrete (then the score keeps its five terms)."""
    data = np.asarray(rows, dtype=np.float32)
    integers = (np.isfinite(data) & (data == np.round(data))).all(0)  # measurements never are
    kept: list[tuple[int, np.ndarray, np.ndarray]] = []
    for column in np.flatnonzero(integers).tolist():
        values, counts = np.unique(data[:, column], return_counts=True)
        if 2 <= len(values) <= LEVELS:
            kept.append((column, values, counts))
    if not kept:
        return None
    levels = np.zeros((len(kept), LEVELS), dtype=np.float32)
    counts = np.zeros((len(kept), LEVELS), dtype=np.float32)
    for c, (_, values, held) in enumerate(kept):
        levels[c, : len(values)], levels[c, len(values) :] = values, values[-1]
        counts[c, : len(values)] = held
    columns = np.array([column for column, _, _ in kept], dtype=np.int64)
    return Discrete(columns, levels, counts, float(np.float32(SATURATION)))
