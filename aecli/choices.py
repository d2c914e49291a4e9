"""The closed choices of a run (kind, loss, noise, scale, precision, arch, activation).

String enums, so that a member equals, prints and formats as the text a model file stores
(as Python 3.11's ``enum.StrEnum``, which 3.10 lacks); ``choice`` turns a flag's or a
parameter's value into a member, the one place an unknown one is refused.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar

from aecli.errors import UsageError

E = TypeVar("E", bound=Enum)


class Choice(str, Enum):
    """A member is its text: ``str(Kind.vae)`` and ``f"{Kind.vae}"`` are ``vae``."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__str__(self).__format__(spec)


class Kind(Choice):
    """The autoencoder variants of Géron's chapter."""

    basic = "basic"
    denoise = "denoise"
    sparse = "sparse"
    vae = "vae"


class Loss(Choice):
    """Reconstruction loss; ``auto`` resolves per kind (see ``default_loss``)."""

    auto = "auto"
    mse = "mse"
    bce = "bce"


class Noise(Choice):
    """Input corruption while training; ``auto`` is gaussian for denoise, none otherwise."""

    auto = "auto"
    none = "none"
    gaussian = "gaussian"
    dropout = "dropout"


class Scale(Choice):
    """Scaling fitted on the training data and inverted on output (see aecli.scaler)."""

    auto = "auto"  # chosen from the data: none, global or robust
    minmax = "minmax"  # each column to [0, 1]
    standard = "standard"  # each column to mean 0, standard deviation 1
    robust = "robust"  # median 0, spread 1 (the smaller of IQR / 1.349 and SD), clipped at 5
    global_ = "global"  # one range for every column (images)
    none = "none"


class Precision(Choice):
    """Arithmetic of the forward pass; weights and optimizer state stay float32."""

    fp32 = "fp32"
    bf16 = "bf16"
    tf32 = "tf32"  # fp32 whose products run on a CUDA GPU's TF32 units (10-bit mantissa)


class Arch(Choice):
    """How the encoder and decoder are built."""

    mlp = "mlp"  # fully connected layers (--hidden)
    conv = "conv"  # strided convolutions over images (--channels), then a linear code


class Activation(Choice):
    """Activation of the hidden (non-coding, non-output) layers."""

    relu = "relu"
    elu = "elu"
    selu = "selu"
    tanh = "tanh"


def choice(enum: type[E], value: Any, flag: str) -> E:
    """``value`` as a member of ``enum``: the one place an unknown kind, loss... is refused."""
    try:
        return enum(value.lower() if isinstance(value, str) else value)  # VAE as vae
    except ValueError:
        valid = ", ".join(str(m) for m in enum)
        what = flag.lstrip("-").replace("-", " ").replace("_", " ")
        raise UsageError(f"unknown {what} {value!r}; valid {what}s: {valid}", flag=flag) from None
