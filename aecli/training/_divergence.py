"""Whether a finished run diverged: the warning ``train`` gives, the flag in the summary.

A loss that overflows stops the run on its own (aecli/training/_pipeline.py); this is the
finite blow-up (issue 36), told from a run that learnt slowly by what it ended at against
the column means and against the network it started from.
"""

from __future__ import annotations

import numpy as np
import torch

from aecli.config import Kind, Loss, ModelConfig
from aecli.models import build_model
from aecli.training._loop import History
from aecli.training._start import Components, start_principal, starts_principal

DIVERGED_OVER_MEAN = 2.0  # a reconstruction this many times worse than the column means
DIVERGED_OVER_FIRST = 10.0  # or a loss this many times the first epoch's
UNTRAINED_ROWS = 512  # rows the untrained network's error is measured on: one small pass


def mean_error(rows: np.ndarray, bce: bool) -> float:
    """The reconstruction error per value of predicting every row as the column means.

    Per value, as the plain models' reconstruction term is; a vae's term is per row.

    What any autoencoder must beat: the variance per value for mse, the entropy of the
    mean per value for cross-entropy.
    """
    if not len(rows):
        return float("nan")
    values = rows.astype(np.float64)
    if not bce:  # a constant column's mean is exact: its variance is 0, not float rounding
        return float(np.where(np.ptp(values, 0) > 0, values.var(0), 0.0).mean())
    p = np.clip(values.mean(0), 1e-7, 1 - 1e-7)
    return float(-(p * np.log(p) + (1 - p) * np.log(1 - p)).mean())


def diverged(history: History, baseline: float, untrained: float = 0.0) -> bool:
    """A run whose loss blew up, though it stayed finite (issue 36: --lr 100 ended at 7e6).

    Its kept reconstruction is over twice the error of predicting the column means and
    over twice the error of the network it started from (``untrained``), or its loss ten
    times the first epoch's: no learning rate that works ends either way. A run of a few
    epochs that has not yet reached the means (an untrained network on data in [0, 1] is
    several times their error) only learnt slowly: it is below where it started. Where
    the means are exact (training rows that are all the same, the held-out ones aside) any
    error is worse than theirs; only the last test applies.
    """
    final = history.kept.terms.get("reconstruction", history.kept.terms.get("loss", 0.0))
    first = history.epochs[0].terms.get("loss", float("nan"))
    return bool(
        (baseline > 0 and final > DIVERGED_OVER_MEAN * max(baseline, untrained))
        or history.kept.terms.get("loss", 0.0) > DIVERGED_OVER_FIRST * first
    )


def diverged_run(
    history: History,
    rows: np.ndarray,
    config: ModelConfig,
    seed: int,
    start: Components | None = None,
) -> bool:
    """``diverged`` against the mean-prediction error of ``rows`` (a sample of the scaled
    training rows), and against the error there of the network as ``seed`` built it."""
    bce = config.loss is Loss.bce
    baseline = mean_error(rows, bce)
    untrained = _untrained_error(config, seed, rows, bce, start)
    if config.kind is Kind.vae:  # its reconstruction is summed over values (and halved)
        factor = config.n_inputs * (1.0 if bce else 0.5)
        baseline, untrained = baseline * factor, untrained * factor
    return diverged(history, baseline, untrained)


def _untrained_error(
    config: ModelConfig, seed: int, rows: np.ndarray, bce: bool, start: Components | None
) -> float:
    """The reconstruction error per value of the network before training (rebuilt from the
    seed as the run built it, on the CPU, the global random state left as it was)."""
    from aecli import losses

    if not len(rows):
        return float("nan")
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.default_generator.manual_seed(seed)  # as the run: it builds the model on the CPU
        model = build_model(config).eval()
        if start is not None and starts_principal(config):
            start_principal(model, start)
        step = max(1, len(rows) // UNTRAINED_ROWS)  # spread over the sample, which is in row order
        x = torch.from_numpy(np.ascontiguousarray(rows[::step][:UNTRAINED_ROWS]))
        decoded = model.decode(model.codes(x))
        if bce:
            return float(losses.bernoulli_nll(decoded, x).mean()) / x.shape[1]
        return float((model.output(decoded) - x).square().mean())
