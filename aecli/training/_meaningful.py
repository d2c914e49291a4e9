"""Flags that mean something only beside another: given without it, refused, not ignored.

A flag that changes nothing is a mistake the user should hear of (``--sparsity-weight``
on a basic model, ``--dropout`` with Gaussian noise), as ``--beta-warmup`` without a VAE
always was. Checked by ``prepare`` from the request alone, before any row is read: the
kind, the noise it trains with and the architecture are known there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aecli.config import Arch, Kind, Noise
from aecli.errors import UsageError

Applies = Callable[[Kind, Noise, Arch], bool]
VAE_ONLY = "is for --kind vae (it weighs the latent loss)"

RULES: dict[str, tuple[Applies, str]] = {
    "noise_std": (lambda k, n, a: n is Noise.gaussian, "is for --noise gaussian (its sigma)"),
    "dropout": (lambda k, n, a: n is Noise.dropout, "is for --noise dropout (the share zeroed)"),
    "sparsity_target": (lambda k, n, a: k is Kind.sparse, "is for --kind sparse"),
    "sparsity_weight": (lambda k, n, a: k is Kind.sparse, "is for --kind sparse"),
    "beta": (lambda k, n, a: k is Kind.vae, VAE_ONLY),
    "channels": (lambda k, n, a: a is Arch.conv, "is for --arch conv (the convolutions' channels)"),
}


def check(kind: Kind, noise: Noise, arch: Arch, given: Iterable[str]) -> None:
    """A usage error for the first given flag that the request makes meaningless."""
    for name in sorted(set(given) & set(RULES)):
        applies, what = RULES[name]
        if not applies(kind, noise, arch):
            raise UsageError(what, flag="--" + name.replace("_", "-"))


def check_warmup(beta_warmup: int, kind: Kind) -> None:
    """``--beta-warmup`` weighs a vae's latent loss: any other kind refuses it, given or not
    (the estimator's parameters are all given)."""
    if beta_warmup and kind is not Kind.vae:
        raise UsageError(VAE_ONLY, flag="--beta-warmup")


def refuse_layerwise(
    kind: Kind,
    arch: Arch,
    tied: bool,
    hidden: tuple[int, ...] | None,
    compile_model: bool,
    streamed: bool,
    resumed: bool,
) -> None:
    """--layerwise trains untied MLP stacks of basic, denoise and sparse, in memory.

    From what a request knows (``hidden`` None: auto, one layer for mlp).

    Asked once, by ``prepare``, before any row is read (a resumed run is refused: its
    stages cannot be resumed).
    """
    if kind is Kind.vae or arch is not Arch.mlp or tied:
        raise UsageError(
            "is for --arch mlp without --tied, kinds basic, denoise and sparse", flag="--layerwise"
        )
    if hidden is not None and not hidden:
        raise UsageError(
            "needs hidden layers to stack; give --hidden, not none", flag="--layerwise"
        )
    if streamed or resumed or compile_model:
        what = "a streamed .npy" if streamed else "--resume" if resumed else "--compile"
        raise UsageError(f"does not work with {what}", flag="--layerwise")
