"""A mixture of Gaussians of the training rows: the code's second reading where rows come in kinds.

The code term reads a row's code against one robust Gaussian of the training codes
(aecli/gaussian.py). Where the rows are of several kinds (digits, species, land covers),
their codes are several clusters, and one Gaussian's centre can lie between them where no
training code is: a row coded there (iris' versicolor between the other two species, a
digit among nine others) is near the centre and scores as ordinary. A mixture of as many
Gaussians as the Bayesian information criterion asks for (1 to ``MAX_COMPONENTS``, as
mclust's default range) gives such a row a low density. The score reads the row both ways
and counts the rarer reading (aecli/tails.py): the one Gaussian still sees a group of
anomalies among the training rows that the mixture has given a component of its own
(issue 39: measured in docs/anomaly.md).

Format 12 fitted the mixture to the codes; but how many components BIC picks moves with
the codes, that is with ``--seed``, and so did the term (the bundled optdigits' AUROC by
0.05 between two seeds). Since format 13 it reads the row's leading principal components
(as many as the code has units, each over its deviation: the density's axes, in the
distances' units, aecli/density.py), which are the code's subspace for the autoencoder
started from them (aecli/training/_start.py) and depend on the rows alone.

Fitted from k-means++ seeds (Arthur & Vassilvitskii 2007) by a few k-means steps and
``EM_STEPS`` of expectation-maximisation, on at most ``FIT_ROWS`` codes drawn by a fixed
seed: the same codes give the same mixture, in some milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aecli import principal

MAX_COMPONENTS = 9  # mclust's default range, 1 to 9
FIT_ROWS = 1024  # codes the mixture is fitted on, a seeded sample beyond
ROWS_PER_COMPONENT = 10  # n codes are given at most n / 10 components
RIDGE = 1e-2  # added to each covariance's diagonal, a share of the codes' mean variance
KMEANS_STEPS = 10  # Lloyd's steps from the k-means++ seeds
EM_STEPS = 5  # expectation-maximisation steps at most from the k-means clusters
TOLERANCE = 1e-3  # ... stopping once the mean log-likelihood rises less (sklearn's default)
LOG_2PI = math.log(2.0 * math.pi)
BLOCK = 8192  # codes a term is computed for at once: [K, BLOCK, D] float64 at most 19 MB at D 32


@dataclass
class Mixture:
    """The components' weights, means and precisions (float32, as the file holds them), and
    what they read: the code, or (``axes``, format 13) the row's whitened principal
    components."""

    weights: np.ndarray  # [K]: positive, summing to 1
    means: np.ndarray  # [K, D]
    precisions: np.ndarray  # [K, D, D]: symmetric positive definite
    centre: np.ndarray | None = None  # [inputs]: the rows' mean, in the distances' units
    axes: np.ndarray | None = None  # [inputs, D]: the leading axes, each over its deviation

    def read(self, codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The term for rows given by their codes and by themselves in the distances'
        units: read on the codes (format 12) or on the rows' components (format 13)."""
        return self.term(codes if self.axes is None else self.project(rows))

    def project(self, rows: np.ndarray) -> np.ndarray:
        """Rows' whitened leading components, float64 [rows, D]."""
        assert self.centre is not None and self.axes is not None
        centred = np.asarray(rows, dtype=np.float64) - self.centre.astype(np.float64)
        return principal.product(centred, self.axes.astype(np.float64))

    def offsets(self) -> np.ndarray:
        """log(weight) + log of each component's normaliser, float64: what the component
        adds at its mean."""
        precisions = self.precisions.astype(np.float64)
        logdet = np.linalg.slogdet(precisions)[1]
        dims = precisions.shape[-1]
        return np.log(self.weights.astype(np.float64)) + 0.5 * logdet - 0.5 * dims * LOG_2PI

    def term(self, codes: np.ndarray) -> np.ndarray:
        """-log of the mixture's density at each code ([rows, D]), float64, in blocks of
        ``BLOCK`` rows: the training rows' codes can be 100,000 of them."""
        offsets = self.offsets()
        out = np.empty(len(codes), dtype=np.float64)
        for start in range(0, len(codes), BLOCK):
            block = codes[start : start + BLOCK]
            out[start : start + BLOCK] = -log_sum_exp(
                component_logs(block, self.means, self.precisions, offsets)
            )
        return out


PARTS = ("weights", "means", "precisions")  # the file's mixture.weights, ...
READS = ("centre", "axes")  # format 13's mixture.centre and .axes: what it reads


def checked(tensors: dict, latent: int, width: int) -> Mixture:
    """The mixture a file holds (``mixture.*``, format 12 on the codes, 13 on the rows'
    components), refused (ValueError) unless it is 1 to ``MAX_COMPONENTS`` components of
    the code's size (of its axes' number), with positive weights summing to 1, symmetric
    positive definite precisions, and axes for rows of ``width`` inputs."""
    if any(f"mixture.{part}" not in tensors for part in PARTS):
        raise ValueError("the code mixture's tensors are incomplete")
    weights, means, precisions = (tensors[f"mixture.{part}"].numpy() for part in PARTS)
    centre = axes = None
    if any(f"mixture.{part}" in tensors for part in READS):
        if not all(f"mixture.{part}" in tensors for part in READS):
            raise ValueError("the code mixture's tensors are incomplete")
        centre, axes = (tensors[f"mixture.{part}"].numpy() for part in READS)
        if centre.shape != (width,) or axes.ndim != 2 or axes.shape[0] != width:
            raise ValueError("the code mixture's axes do not match the number of inputs")
        latent = axes.shape[1]
    count = len(weights) if weights.ndim == 1 else 0
    if (
        not 1 <= count <= MAX_COMPONENTS
        or means.shape != (count, latent)
        or (precisions.shape != (count, latent, latent))
    ):
        raise ValueError("the code mixture does not match the code size")
    parts = (weights, means, precisions, *(() if axes is None else (centre, axes)))
    finite = all(np.isfinite(a).all() for a in parts)
    if not finite or not (weights > 0).all() or abs(float(weights.sum()) - 1.0) > 1e-4:
        raise ValueError("the code mixture's weights, means or precisions are damaged")
    if not np.array_equal(precisions, precisions.transpose(0, 2, 1)) or (
        np.linalg.eigvalsh(precisions.astype(np.float64)).min() <= 0
    ):
        raise ValueError("the code mixture's precisions are not positive definite")
    return Mixture(weights, means, precisions, centre, axes)


def component_logs(
    codes: np.ndarray, means: np.ndarray, precisions: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """offset_k - (x - mu_k)' P_k (x - mu_k) / 2 for each code and component, float64."""
    x = np.asarray(codes, dtype=np.float64)
    centred = x[None] - means.astype(np.float64)[:, None, :]  # [K, rows, D]
    squared = ((centred @ precisions.astype(np.float64)) * centred).sum(2)  # [K, rows]
    return offsets[None, :] - 0.5 * squared.T


def log_sum_exp(logs: np.ndarray) -> np.ndarray:
    """log sum_k exp(logs[:, k]), stably."""
    top = logs.max(1, keepdims=True)
    return top[:, 0] + np.log(np.exp(logs - top).sum(1))


def fit_rows(rows: np.ndarray, centre: np.ndarray, axes: np.ndarray, seed: int) -> Mixture:
    """The mixture of the rows' (distances' units) leading components along ``axes`` (the
    density's, largest first, about ``centre``), each over its deviation on these rows.

    Whitened as the codes of the principal start are (each unit a component's standardised
    score), so that the ridge, a share of the mean variance, counts alike in every direction.
    """
    centred = np.asarray(rows, np.float64) - centre.astype(np.float64)
    components = principal.product(centred, axes.astype(np.float64))  # any thread count
    deviation = components.std(0)
    deviation = np.where(deviation > 0, deviation, 1.0)
    mixture = fit(components / deviation, seed)
    mixture.centre = centre.astype(np.float32)
    mixture.axes = (axes.astype(np.float64) / deviation).astype(np.float32)
    return mixture


def fit(codes: np.ndarray, seed: int) -> Mixture:
    """The mixture of 1 to ``MAX_COMPONENTS`` Gaussians with the lowest BIC.

    Counts are tried from one up, and the search stops once two more in a row have not
    lowered the criterion: codes that are one cloud cost three small fits.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(codes, dtype=np.float64)
    if len(x) > FIT_ROWS:
        x = x[np.sort(rng.choice(len(x), FIT_ROWS, replace=False))]
    ridge = RIDGE * max(float(x.var(0).mean()), 1e-12)
    best: tuple[float, Mixture] | None = None
    worse = 0
    for count in range(1, max(1, min(MAX_COMPONENTS, len(x) // ROWS_PER_COMPONENT)) + 1):
        labels = kmeans(x, count, rng)
        if labels is None:  # fewer distinct codes than components
            break
        mixture, log_likelihood = expectation_maximisation(x, labels, count, ridge)
        criterion = -2.0 * log_likelihood + parameters(count, x.shape[1]) * math.log(len(x))
        if best is None or criterion < best[0]:
            best, worse = (criterion, mixture), 0
        else:
            worse += 1
            if worse == 2:
                break
    assert best is not None  # one component always fits
    return best[1]


def parameters(count: int, dims: int) -> int:
    """The free parameters of ``count`` full-covariance Gaussians in ``dims`` and their weights."""
    return count - 1 + count * dims + count * dims * (dims + 1) // 2


def expectation_maximisation(
    x: np.ndarray, labels: np.ndarray, count: int, ridge: float
) -> tuple[Mixture, float]:
    """The mixture from the k-means clusters' Gaussians after ``EM_STEPS`` at most, as the
    file will hold it (float32), and its total log-likelihood on ``x``."""
    resp = np.zeros((len(x), count))
    resp[np.arange(len(x)), labels] = 1.0
    previous = -math.inf
    for step in range(EM_STEPS + 1):
        mixture = maximisation(x, resp, ridge)
        logs = component_logs(x, mixture.means, mixture.precisions, mixture.offsets())
        total = log_sum_exp(logs)
        if step == EM_STEPS or float(total.mean()) - previous < TOLERANCE:
            return mixture, float(total.sum())
        previous = float(total.mean())
        resp = np.exp(logs - total[:, None])
    raise AssertionError("unreachable: the last step returns")


def maximisation(x: np.ndarray, resp: np.ndarray, ridge: float) -> Mixture:
    """Weights, means and ridged precisions from the responsibilities, in float32."""
    mass = resp.sum(0) + 1e-12
    means = (resp.T @ x) / mass[:, None]
    centred = x[None] - means[:, None, :]  # [K, rows, D]
    weighted = centred * resp.T[:, :, None]
    covariances = (weighted.transpose(0, 2, 1) @ centred) / mass[:, None, None]
    covariances += ridge * np.eye(x.shape[1])[None]
    inverses = np.linalg.inv(covariances)
    precisions = 0.5 * (inverses + inverses.transpose(0, 2, 1))
    weights = mass / mass.sum()
    return Mixture(
        weights.astype(np.float32), means.astype(np.float32), precisions.astype(np.float32)
    )


def kmeans(x: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray | None:
    """Each code's cluster of ``count``: k-means++ seeds, then ``KMEANS_STEPS`` of Lloyd's;
    None where fewer distinct codes than clusters exist."""
    centres = [x[rng.integers(len(x))]]
    nearest = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, count):
        if nearest.sum() <= 0:
            return None
        centres.append(x[rng.choice(len(x), p=nearest / nearest.sum())])
        nearest = np.minimum(nearest, ((x - centres[-1]) ** 2).sum(1))
    c = np.array(centres)
    labels = np.zeros(len(x), dtype=np.int64)
    for _ in range(KMEANS_STEPS):
        distances = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
        labels = distances.argmin(1)
        members = np.bincount(labels, minlength=count)
        sums = np.zeros_like(c)
        np.add.at(sums, labels, x)
        held = members > 0  # a centre that lost every code stays where it was
        c[held] = sums[held] / members[held, None]
    return labels
