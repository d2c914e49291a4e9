"""What ``train`` stores for later commands to compare against, once the network is fitted.

PCA of the same code size (``evaluate --baseline pca``), the statistics of the anomaly
score's terms (aecli/diagnostics.py ``code_stats``, aecli/neighbours.py) and the
percentiles of the score that ``score --contamination`` turns a share into a threshold
with: the rows given, or where they score higher the held-out rows, scored as new rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from aecli import neighbours
from aecli.diagnostics import code_stats, percentiles, score_quantiles

if TYPE_CHECKING:
    from aecli.density import Density
    from aecli.fitted import FittedModel

PCA_MAX_INPUTS = 4096  # above this the d x d covariance is not worth storing


def add_baselines(
    fitted: FittedModel,
    train_blocks: Callable[[], Iterable[np.ndarray]],
    code_rows: np.ndarray,
    score_rows: np.ndarray,
    reference_rows: np.ndarray,
    held_rows: np.ndarray | None = None,
    held_in_reference: np.ndarray | None = None,
) -> None:
    """What later commands compare against: PCA of the same code size, training scores.

    PCA over every training row (``train_blocks`` yields them, raw, in blocks) in the
    model's scaled units, so that no column outweighs the others by its units; code
    statistics from ``code_rows``, a sample of the training rows, and the neighbour
    terms' ``reference_rows`` (``neighbour_rows`` of the rows given: when ``score_rows`` is
    the same array, its neighbour terms are computed once). The score percentiles are
    those of ``score_rows``, a sample of every row given, held-out ones included, or where
    higher those of ``held_rows`` (a sample of the held-out rows; ``held_in_reference``
    says which reference rows they are) scored as new rows: ``calibrated``. The estimator's
    ``offset_`` after ``fit`` is then the one ``load`` reads back.
    """
    from aecli.pca import PCA

    if fitted.config.n_inputs <= PCA_MAX_INPUTS:
        k = min(fitted.config.latent, fitted.config.n_inputs)
        scaled = fitted.scaler.transform
        fitted.pca = PCA.fit_chunks(lambda: (scaled(block) for block in train_blocks()), k)
        fitted.pca.scaled = True
    reference = neighbours.neighbour_reference(fitted, reference_rows, held_in_reference)
    fitted.code_stats = code_stats(fitted, code_rows, reference)
    known = reference.terms if score_rows is reference_rows else None
    fitted.score_quantiles = score_quantiles(fitted, score_rows, known)
    if held_rows is not None and len(held_rows):
        fitted.score_quantiles = calibrated(fitted, held_rows, reference.unseen)


def calibrated(
    fitted: FittedModel, held_rows: np.ndarray, unseen: tuple[Density, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """The stored score percentiles, raised where the held-out rows' are higher.

    ``--contamination q`` should flag about a share q of new rows like the training rows,
    but a training row's score is in-sample: on a small, wide table the autoencoder
    reconstructs its own rows closely and the density's components are fitted to them, so
    every new row can score above them (137 rows of 512: 100% of new normal rows flagged
    at q = 0.1). The held-out rows were never trained on; scored with a density fitted
    without them (``unseen``), and with leave-one-out neighbour terms where they are
    reference rows, each scores as a new row would. Their percentiles are the honest
    estimate, but a noisy one where they are few, while the in-sample one errs low where
    it errs at all: each percentile is the higher of the two, so ``--contamination``
    flags at most about the share asked.
    """
    stats = fitted.code_stats
    if unseen is not None and stats is not None and stats.grids is not None:
        grids = {**stats.grids, "density": percentiles(unseen[1])}
        fitted = replace(fitted, code_stats=replace(stats, density=unseen[0], grids=grids))
    held = score_quantiles(fitted, held_rows)
    return {name: np.maximum(grid, held[name]) for name, grid in fitted.score_quantiles.items()}
