"""Where training starts: the data's principal components, not a random network.

An autoencoder with a linear coding layer is at its best at least PCA of the same size
(Baldi & Hornik 1989), so the default network starts near there: its first layer reads
the rows' leading principal directions (each one a pair of units, +v and -v, reading the
component's standardised score, whose difference the activation passes bent a little), the
coding layer keeps the first ``latent`` of them, and the decoder maps them back along the
same directions. Units left in their bent range keep what training needs to go beyond PCA:
read at a quarter of the score, where the pairs are almost linear, the network stayed near
PCA and reconstructed held-out digits 6% worse than from a random start (at the whole
score, as well). The seed's random weights stay, at a hundredth of their size, so that
units differ; they no longer set where the network starts. Two seeds started at random
learnt unrelated codes; from the components their codes agree, and what still moves with
the seed is mostly the batch order (issue 39: measured in docs/anomaly.md).

Only the plain dense shape trained on clean inputs has this start: one hidden layer, a
linear coding layer, untied weights, no ``--noise``, at most ``START_INPUTS`` inputs. A
sparse code is a sigmoid, a VAE's a distribution, a tied decoder is the encoder itself,
convolutions have no components per unit, and PCA is not the optimum under input noise
(from it, input dropout on digits ended at 28% more held-out error); they start at random
as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from aecli import principal
from aecli.config import Arch, Kind, ModelConfig, Noise
from aecli.models import ACTIVATIONS, Autoencoder

START_ROWS = 10_000  # the seeded sample of scaled training rows the components come from
RANDOM_SHARE = 0.01  # what is left of the random initial weights: enough to tell units apart
# Wider rows start at random: the decomposition grows as the cube of the width (0.8 s at
# 1,024 inputs on 2 cores, 12 s at 3,072), past what the start saves.
START_INPUTS = 1024
SLOPE_STEP = 1e-3  # the activation's slope at 0, by a central difference


def starts_principal(config: ModelConfig) -> bool:
    """Whether ``config`` builds the dense shape that starts from the components."""
    return (
        config.arch is Arch.mlp
        and config.kind in (Kind.basic, Kind.denoise)
        and config.noise is Noise.none
        and not config.tied
        and len(config.hidden) == 1
        and config.n_inputs <= START_INPUTS
    )


def slope(activation: str) -> float:
    """The activation's slope g at 0: a unit pair's difference is act(t) - act(-t) = 2 g t."""
    step = torch.tensor([SLOPE_STEP, -SLOPE_STEP], dtype=torch.float64)
    up, down = ACTIVATIONS[activation](step).tolist()
    return (up - down) / (2 * SLOPE_STEP)


@dataclass(frozen=True)
class Components:
    """A sample's mean, principal directions (rows, leading first) and spread along each."""

    mean: np.ndarray  # float64 [inputs]
    directions: np.ndarray  # float64 [k, inputs]
    spread: np.ndarray  # float64 [k], descending


def components(rows: np.ndarray) -> Components:
    """The principal components of ``rows`` (scaled rows), in float64.

    From the covariance's eigendecomposition in ``aecli.principal``, on one thread so that
    the process's thread count (torchrun's workers run one) cannot move a sum's rounding,
    let alone turn two directions of near-equal spread: 0.5 s for 10,000 rows of 784
    columns, half an SVD's time. The squared condition costs nothing here: directions of
    under 1e-5 of the leading spread are left out. Each direction's largest entry is
    positive, so the start does not hang on the sign a LAPACK build returns.
    """
    values = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    mean = values.mean(0)
    moment = principal.scatter([values], mean) / max(1, len(values) - 1)
    variance, vectors = principal.eigh(moment)
    vectors = vectors.T
    kept = variance > max(float(variance[0]) if len(variance) else 0.0, 1e-24) * 1e-10
    directions = vectors[kept]
    flip = directions[np.arange(len(directions)), np.abs(directions).argmax(1)] < 0
    directions[flip] *= -1.0
    return Components(mean, directions, np.sqrt(variance[kept]))


@torch.no_grad()
def start_principal(model: Autoencoder, start: Components) -> None:
    """Set ``model``'s weights (built from the seed) to the ``start`` components (of scaled
    training rows) plus ``RANDOM_SHARE`` of what they were.

    Hidden unit 2j reads +(x - mean) . v_j / s_j and unit 2j + 1 the negative, for the
    leading directions v_j and spreads s_j while units last; code j is their difference
    over 2g (g the activation's slope at 0), about the j-th standardised component score;
    the decoder's pair j reads +-code j, and the output adds back the pair's difference
    along s_j v_j / 2g, plus the mean. Units past twice the directions keep their small
    random weights.
    """
    first, coding = model.encoder
    widen, last = model.decoder
    gain = slope(model.config.activation)
    layers = (first, coding, widen, last)
    weights = [layer.weight.detach().double() * RANDOM_SHARE for layer in layers]
    biases = [layer.bias.detach().double() * RANDOM_SHARE for layer in layers]
    v = torch.from_numpy(start.directions)
    s = torch.from_numpy(start.spread)
    centre = torch.from_numpy(start.mean)
    latent = coding.out_features
    for unit in range(min(first.out_features, 2 * len(s))):
        j, sign = unit // 2, 1.0 - 2.0 * (unit % 2)
        weights[0][unit] += sign * v[j] / s[j]
        biases[0][unit] -= sign * float(centre @ v[j]) / float(s[j])
        if j < latent:
            weights[1][j, unit] += sign / (2 * gain)
            weights[2][unit, j] += sign
            weights[3][:, unit] += sign * v[j] * s[j] / (2 * gain)
    biases[3] += centre
    for layer, weight, bias in zip(layers, weights, biases):
        layer.weight.copy_(weight.to(layer.weight.dtype))
        layer.bias.copy_(bias.to(layer.bias.dtype))
