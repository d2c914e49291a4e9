"""Loss terms as pure functions, each with its formula.

Every function returns one value per row (shape ``[batch]``) so that training
(which averages over the batch) and scoring (which reports per row) share
them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# q is kept inside [EPS, 1 - EPS] so that log(q) and log(1 - q) stay finite.
SPARSITY_EPS = 1e-6


def squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sum_j (x_hat_j - x_j)^2 per row."""
    return (output - target).pow(2).sum(dim=1)


def bernoulli_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per row: -sum_j [x_j log s(l_j) + (1 - x_j) log(1 - s(l_j))], s = sigmoid.

    Computed from logits (``binary_cross_entropy_with_logits``) so that it is
    stable where a sigmoid followed by a log would overflow.
    """
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(dim=1)


def bernoulli_kl(p: float, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = p log(p / q) + (1 - p) log((1 - p) / (1 - q)), elementwise.

    q is clamped into [SPARSITY_EPS, 1 - SPARSITY_EPS] so the result is never
    NaN or infinite, even for a unit that is always off or always on.
    """
    q = q.clamp(SPARSITY_EPS, 1.0 - SPARSITY_EPS)
    return p * torch.log(p / q) + (1.0 - p) * torch.log((1.0 - p) / (1.0 - q))


def sparsity_penalty(
    codes: torch.Tensor,
    target: float,
    batch_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """sum over coding units of KL(p || q_k), q_k = mean activation of unit k over the batch.

    A batch-level scalar (q is a batch statistic), as in Géron's chapter.
    ``batch_mean`` replaces the mean over ``codes``' rows when they are one
    process's share of the batch (the mean is then taken over every share).
    """
    q = codes.mean(dim=0) if batch_mean is None else batch_mean(codes)
    return bernoulli_kl(target, q).sum()


def gaussian_kl(mu: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per row = 0.5 * sum(exp(gamma) + mu^2 - 1 - gamma).

    gamma = log sigma^2 (Kingma & Welling 2014, appendix B).
    """
    return 0.5 * (gamma.exp() + mu.pow(2) - 1.0 - gamma).sum(dim=1)
