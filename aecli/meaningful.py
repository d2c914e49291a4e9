"""Flags that mean something only beside another: given without it, refused, not ignored.

A flag that changes nothing is a mistake the user should hear of (``--sparsity-weight``
on a basic model, ``--dropout`` with Gaussian noise), as ``--beta-warmup`` without a VAE
always was. Checked against the resolved model config, for the flags the user gave.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aecli.config import ModelConfig
from aecli.errors import UsageError

RULES: dict[str, tuple[Callable[[ModelConfig], bool], str]] = {
    "noise_std": (lambda c: c.noise == "gaussian", "is for --noise gaussian (its sigma)"),
    "dropout": (lambda c: c.noise == "dropout", "is for --noise dropout (the share zeroed)"),
    "sparsity_target": (lambda c: c.kind == "sparse", "is for --kind sparse"),
    "sparsity_weight": (lambda c: c.kind == "sparse", "is for --kind sparse"),
    "beta": (lambda c: c.kind == "vae", "is for --kind vae (it weighs the latent loss)"),
    "channels": (lambda c: c.arch == "conv", "is for --arch conv (the convolutions' channels)"),
}


def check(config: ModelConfig, given: Iterable[str]) -> None:
    """A usage error for the first given flag that ``config`` makes meaningless."""
    for name in sorted(set(given) & set(RULES)):
        applies, what = RULES[name]
        if not applies(config):
            raise UsageError(what, flag="--" + name.replace("_", "-"))
