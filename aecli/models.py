"""The autoencoder variants and the registry that maps a kind to its class.

Names follow the math: ``encode``, ``reparameterize``, ``decode``. ``forward``
returns the loss and its named terms, so one trainer serves every kind.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from aecli import losses
from aecli.config import Arch, Kind, Loss, ModelConfig, Noise
from aecli.conv import ConvLayers


class Share(Protocol):
    """What a model asks of the rows it sees when they are one share of a global batch.

    Under torchrun the trainer sets ``model.share`` (aecli.training.BatchShare): noise is
    drawn for the whole batch and sliced, and batch means are taken over every rank.
    """

    def noise(self, like: torch.Tensor, draw: str, p: float = 0.0) -> torch.Tensor: ...

    def batch_mean(self, values: torch.Tensor) -> torch.Tensor: ...


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "elu": F.elu,
    "selu": F.selu,
    "tanh": torch.tanh,
}

Terms = dict[str, torch.Tensor]


class Autoencoder(nn.Module):
    """Plain or stacked undercomplete autoencoder; the decoder mirrors the encoder.

    With ``tied`` each decoder layer uses the transposed weight of its mirror
    encoder layer at forward time (its own bias), so no parameter is stored
    twice. The coding layer is linear, so a trained model can do at least as
    well as PCA of the same size.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self._build(config)
        self.act = ACTIVATIONS[config.activation]
        self._bce = config.loss == Loss.bce
        self._noise = config.noise
        # Set by the trainer while this process sees one share of a global batch
        # (torchrun): noise and batch statistics are then those of the whole batch.
        self.share: Share | None = None
        # The share of --beta a VAE's latent loss has while training (--beta-warmup).
        self.kl_weight = 1.0

    def _build(self, config: ModelConfig) -> None:
        """The layers: dense here, convolutions in aecli.conv."""
        sizes = config.sizes
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        mirror = tuple(reversed(sizes))
        if config.tied:
            self.decoder_bias = nn.ParameterList(nn.Parameter(torch.zeros(b)) for b in mirror[1:])
        else:
            self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(mirror))
        # Plain lists fixed at construction: a training step on a small table is
        # dominated by per-call overhead, and slicing a ModuleList builds a new
        # one on every call.
        self._hidden_layers = list(self.encoder)[:-1]
        self._mirrored = list(reversed(self.encoder))

    # -- the three parts -------------------------------------------------
    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """Noise for denoising, only while training: ``x + N(0, s^2)`` or input dropout."""
        cfg = self.config
        if not self.training or self._noise == Noise.none:
            return x
        if self._noise == Noise.gaussian:
            return x + cfg.noise_std * self.normal_like(x)
        if self.share is None:
            return F.dropout(x, p=cfg.dropout, training=True)
        keep = 1.0 - cfg.dropout  # F.dropout's mask, drawn for the whole batch
        return x * self.share.noise(x, "bernoulli", keep).div_(keep)

    def normal_like(self, x: torch.Tensor) -> torch.Tensor:
        """N(0, 1) noise shaped like ``x``: this share's rows of the whole batch's draw."""
        if self.share is None:
            return torch.randn_like(x)
        return self.share.noise(x, "normal")

    def batch_mean(self, x: torch.Tensor) -> torch.Tensor:
        """The mean over the (global) batch of each column."""
        return x.mean(dim=0) if self.share is None else self.share.batch_mean(x)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder up to (not including) the coding layer."""
        for layer in self._hidden_layers:
            x = self.act(layer(x))
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder[-1](self.hidden(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes to outputs: logits for the bce loss, values for mse."""
        layers = self.decoder_layers()
        last = len(layers) - 1
        for i, (weight, bias) in enumerate(layers):
            z = F.linear(z, weight, bias)
            if i < last:
                z = self.act(z)
        return z

    def decoder_layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.config.tied:
            return [(enc.weight.t(), b) for enc, b in zip(self._mirrored, self.decoder_bias)]
        return [(layer.weight, layer.bias) for layer in self.decoder]

    # -- what users of a trained model call ---------------------------------
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The coding layer for ``encode`` (a VAE gives its mean)."""
        return self.encode(x)

    def output(self, decoded: torch.Tensor) -> torch.Tensor:
        """Decoder output in scaled units: the sigmoid of the logits under bce."""
        return torch.sigmoid(decoded) if self._bce else decoded

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.decode(self.codes(x)))

    # -- training ----------------------------------------------------------
    def reconstruction_error(self, decoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-row error: mean squared error, or cross-entropy on logits, per value."""
        if self.config.loss == Loss.bce:
            return losses.bernoulli_nll(decoded, x) / x.shape[1]
        return losses.squared_error(decoded, x) / x.shape[1]

    def mean_reconstruction_error(self, decoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The batch mean of ``reconstruction_error``, as one fused op (fewer kernels a step)."""
        if self._bce:
            return F.binary_cross_entropy_with_logits(decoded, x)
        return F.mse_loss(decoded, x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        """Loss against the clean input, with its named terms."""
        # .float(): under bf16 autocast the layers run in bf16, the loss stays in fp32.
        decoded = self.decode(self.encode(self.corrupt(x))).float()
        reconstruction = self.mean_reconstruction_error(decoded, x)
        return reconstruction, {"reconstruction": reconstruction}


class SparseAutoencoder(Autoencoder):
    """Sigmoid coding layer; loss + sparsity_weight * sum_k KL(p || q_k)."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(super().encode(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        codes = self.encode(self.corrupt(x))
        reconstruction = self.mean_reconstruction_error(self.decode(codes).float(), x)
        sparsity = losses.sparsity_penalty(
            codes.float(), self.config.sparsity_target, self.batch_mean
        )
        loss = reconstruction + self.config.sparsity_weight * sparsity
        return loss, {"reconstruction": reconstruction, "sparsity": sparsity}


class VariationalAutoencoder(Autoencoder):
    """Gaussian latent (Kingma & Welling 2014) with a mean head and a gamma = log sigma^2 head.

    The loss is the negative ELBO per row: the reconstruction summed over
    features (cross-entropy, or half the squared error = a unit-variance
    Gaussian up to a constant) plus beta * KL(q(z|x) || N(0, I)).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.gamma = nn.Linear(self.encoder[-1].in_features, config.latent)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        h = self.hidden(x)
        return self.encoder[-1](h), self.gamma(h)

    def reparameterize(self, mu: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """z = mu + exp(gamma / 2) * eps, eps ~ N(0, I): sampling that gradients pass through."""
        return mu + torch.exp(0.5 * gamma) * self.normal_like(mu)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]

    def reconstruction_error(self, decoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.config.loss == Loss.bce:
            return losses.bernoulli_nll(decoded, x)
        return 0.5 * losses.squared_error(decoded, x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        mu, gamma = self.encode(self.corrupt(x))
        mu, gamma = mu.float(), gamma.float()
        decoded = self.decode(self.reparameterize(mu, gamma)).float()
        reconstruction = self.reconstruction_error(decoded, x).mean()
        latent = losses.gaussian_kl(mu, gamma).mean()
        beta = self.config.beta * (self.kl_weight if self.training else 1.0)
        loss = reconstruction + beta * latent
        return loss, {"reconstruction": reconstruction, "latent": latent}

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode n draws of z ~ N(0, I) into outputs in scaled units."""
        device = self.gamma.weight.device
        z = torch.randn(n, self.config.latent, generator=generator, device=device)
        return self.output(self.decode(z))


class ConvAutoencoder(ConvLayers, Autoencoder):
    """basic and denoise with convolutions (aecli.conv)."""


class ConvSparseAutoencoder(ConvLayers, SparseAutoencoder):
    """Sigmoid coding units after the convolutions; KL(p || q) as in the MLP."""


class ConvVariationalAutoencoder(ConvLayers, VariationalAutoencoder):
    """Mean and log-variance heads on the convolutions' output; the decoder is the mirror."""


# The MLP class of each kind to its conv counterpart.
CONV_MODELS: dict[type[Autoencoder], type[Autoencoder]] = {
    Autoencoder: ConvAutoencoder,
    SparseAutoencoder: ConvSparseAutoencoder,
    VariationalAutoencoder: ConvVariationalAutoencoder,
}

MODELS: dict[str, type[Autoencoder]] = {
    Kind.basic: Autoencoder,
    Kind.denoise: Autoencoder,
    Kind.sparse: SparseAutoencoder,
    Kind.vae: VariationalAutoencoder,
}


def build_model(config: ModelConfig) -> Autoencoder:
    """Instantiate the class registered for ``config.kind`` (and ``config.arch``).

    ``config`` is a checked one (its kind a member since it was built, its values by
    ``validate`` where the request was resolved or the file was read).
    """
    cls = MODELS[config.kind]
    if config.arch == Arch.conv:
        cls = CONV_MODELS[cls]
    return cls(config)
