"""Model and training configuration: torch-free dataclasses.

The CLI builds these from flags, the core builds models from them, and the
model file stores them as JSON so that the file alone rebuilds the model.
Every field has a default so that files written before a field existed still
load (``from_dict`` fills what is missing).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aecli.choices import (
    Activation,
    Arch,
    Kind,
    Loss,
    Noise,
    Precision,
    Scale,
)
from aecli.fields import (
    check,
    finite,
    members,
    one_of,
    params_of,
    plain,
    typed_fields,
)
from aecli.sizes import check_image

MAX_PARAMETERS = 2**30  # ~4 GiB of float32 weights, 16 GiB with gradients and Adam's moments

# 2: the neighbour term (neighbours.reference, terms.*): a format 1 reader would score such a
# file by the old formula, so it is told to upgrade; older files score as written. 3: relative
# term (.reach); 4: density.*; 5: discrete.*; 6: distances in their own units (.offset, .scale);
# 7: wide references in float16; 8: the autoencoder's terms above their medians (floor.*); 9: the
# code's lower tail (lower.*); 10: sampled (.samples); 11: discrete.saturation; 12: mixture.*;
# 13: the mixture on the rows' components (.centre, .axes); 14: span.*; 15: marginal.*; 16: power.*.
FORMAT_VERSION = 16

# Every choice of rows (held out, sampled for the scale and the score's statistics, kept for
# the neighbours) is drawn from this seed, not --seed: two seeds differ only in the network's
# randomness (weights, batch order, noise). The held-out rows alone moved a contaminated
# table's AUROC between two seeds by 0.004 on average (issue 39).
ROWS_SEED = 4


def default_loss(kind: Kind, unit_range: bool = True) -> Loss:
    """bce for VAEs on [0, 1] data (a Bernoulli decoder, as in Kingma & Welling), else mse.

    ``unit_range`` says whether the scaled data lies in [0, 1]; on a table scaled
    robustly it does not, and the VAE's decoder is Gaussian (mse) instead.
    """
    return Loss.bce if kind == Kind.vae and unit_range else Loss.mse


def default_noise(kind: Kind) -> Noise:
    """Only the denoising kind corrupts its inputs unless ``--noise`` says otherwise."""
    return Noise.gaussian if kind == Kind.denoise else Noise.none


def default_latent(n_inputs: int) -> int:
    """A quarter of the width, between 4 and 32: 4 for a 10-column table, 32 for 784 pixels.

    At least 4 (all but one column on narrower tables): a code of 2 units keeps only the
    two directions its initial weights favour, so two seeds learnt different codes, and
    on 10-column tables their anomaly AUROCs differed by up to 0.13; 4 units hold most
    of a narrow table's variation, and the seeds agree (docs/anomaly.md).
    """
    return max(1, min(4, n_inputs - 1), min(32, n_inputs // 4))


def default_hidden(n_inputs: int, latent: int) -> tuple[int, ...]:
    """One hidden layer between the input and the coding layer, capped at 256 units."""
    return (min(256, max(4 * latent, n_inputs // 2)),)


@dataclass(frozen=True)
class ModelConfig:
    """What rebuilds a model: architecture, loss and regularisation.

    Defaults are the book's choices where it has one (sparsity target 0.1 and
    weight 0.2, dropout 0.3 = keep_prob 0.7) and otherwise ones that suit both
    a 10-column table and 784-pixel images.
    """

    kind: Kind = Kind.basic
    n_inputs: int = 1
    hidden: tuple[int, ...] = ()
    latent: int = 1
    activation: Activation = Activation.elu  # smooth, no dead units in tiny models
    tied: bool = False  # decoder weights = encoder weights transposed
    loss: Loss = Loss.mse
    noise: Noise = Noise.none
    noise_std: float = 0.2  # sigma of the gaussian noise, in scaled units
    dropout: float = 0.3  # fraction of inputs zeroed (book: keep_prob 0.7)
    sparsity_target: float = 0.1  # p, the target mean activation of a coding unit
    sparsity_weight: float = 0.2  # weight of sum KL(p || q) in the loss
    beta: float = 1.0  # weight of the VAE latent loss (1 = the ELBO)
    arch: Arch = Arch.mlp
    channels: tuple[int, ...] = ()  # conv: channels of each strided convolution
    image: tuple[int, ...] = ()  # conv: channels, height and width of an input row

    def __post_init__(self) -> None:
        members(self)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Layer widths from the input to the coding layer (conv: input, conv output, code)."""
        if self.arch is Arch.conv:
            return (self.n_inputs, self.conv_features(), self.latent)
        return (self.n_inputs, *self.hidden, self.latent)

    def conv_grids(self) -> list[tuple[int, int]]:
        """Height and width at the input and after each stride-2 convolution (ceil(n / 2))."""
        height, width = self.image[1], self.image[2]
        grids = [(height, width)]
        for _ in self.channels:
            height, width = -(-height // 2), -(-width // 2)
            grids.append((height, width))
        return grids

    def conv_features(self) -> int:
        """Values leaving the last convolution: what the linear coding layer reads."""
        height, width = self.conv_grids()[-1]
        return self.channels[-1] * height * width

    def architecture(self) -> str:
        """The mirrored shape as users write it: ``64-32-8-32-64``, ``1x8x8-c32-16-c32-1x8x8``."""
        if self.arch is Arch.conv:
            image = "x".join(str(s) for s in self.image)
            convs = [f"c{c}" for c in self.channels]
            return "-".join([image, *convs, str(self.latent), *reversed(convs), image])
        widths = [*self.sizes, *reversed(self.sizes[:-1])]
        return "-".join(str(w) for w in widths)

    def validate(self) -> None:
        """Raise UsageError naming the flag for any value the models cannot use."""
        # Resolved values only: a model file holding "auto" is damaged, not a request
        # (the choice fields are members already: "salt" was refused as the file loaded).
        one_of(self.loss, (Loss.mse, Loss.bce), "--loss")
        one_of(self.noise, (Noise.none, Noise.gaussian, Noise.dropout), "--noise")
        check(type(self.tied) is bool, "--tied", f"must be true or false, got {self.tied!r}")
        check(self.n_inputs >= 1, "DATA", "the data has no feature columns")
        check(self.latent >= 1, "--latent", f"must be at least 1, got {self.latent}")
        check(
            all(type(size) is int and size >= 1 for size in (self.n_inputs, self.latent)),
            "--latent",
            "sizes must be whole numbers",
        )
        check(
            all(type(size) is int and size >= 1 for size in self.hidden),
            "--hidden",
            f"layer sizes must be whole numbers of at least 1, got {list(self.hidden)}",
        )
        if self.arch is Arch.conv:
            self._validate_conv()
        regularised = self.kind in (Kind.sparse, Kind.denoise) or self.noise is not Noise.none
        check(
            self.latent <= self.n_inputs or regularised,
            "--latent",
            f"{self.latent} is larger than the input ({self.n_inputs} features); an "
            "overcomplete code only makes sense for --kind sparse or with --noise",
        )
        check(
            self.parameters() <= MAX_PARAMETERS,
            self._largest_size_flag(),
            f"a model of {self.parameters():,} parameters is beyond what aecli trains "
            f"(at most {MAX_PARAMETERS:,})",
        )  # F15: found here, not as an allocation failure
        check(0.0 <= self.dropout < 1.0, "--dropout", f"must be in [0, 1), got {self.dropout}")
        # inf passes ">= 0" and then turns the loss into nan mid-run (F22): refuse it here.
        finite(self.noise_std, "--noise-std")
        finite(self.sparsity_weight, "--sparsity-weight")
        finite(self.beta, "--beta")
        check(self.noise_std >= 0.0, "--noise-std", f"must be >= 0, got {self.noise_std}")
        check(
            0.0 < self.sparsity_target < 1.0,
            "--sparsity-target",
            f"must be strictly between 0 and 1, got {self.sparsity_target}",
        )
        check(
            self.sparsity_weight >= 0.0,
            "--sparsity-weight",
            f"must be >= 0, got {self.sparsity_weight}",
        )
        check(self.beta >= 0.0, "--beta", f"must be >= 0, got {self.beta}")

    def _validate_conv(self) -> None:
        check(
            len(self.image) == 3 and all(type(s) is int and s >= 1 for s in self.image),
            "--arch conv",
            "needs image rows: an N x H x W or N x C x H x W .npy, or --image-shape HxW or CxHxW",
        )
        check_image(self.image, self.n_inputs)
        check(
            bool(self.channels) and all(type(c) is int and c >= 1 for c in self.channels),
            "--channels",
            f"needs one or more positive channel counts such as 32,64, got {list(self.channels)}",
        )
        check(not self.hidden, "--hidden", "is for --arch mlp; conv models use --channels")

    def _largest_size_flag(self) -> str:
        """The flag of the largest layer size: what to blame for a model too big (F3-13)."""
        sizes = {"--latent": self.latent}
        if self.arch is Arch.conv and self.channels:
            sizes["--channels"] = max(self.channels)
        elif self.hidden:
            sizes["--hidden"] = max(self.hidden)
        return max(sizes, key=lambda flag: sizes[flag])

    def parameters(self) -> int:
        """Weights and biases of encoder and decoder (an upper bound for tied weights)."""
        if self.arch is Arch.conv:
            chans = (self.image[0], *self.channels)
            convs = sum((a * 9 + 1) * b for a, b in itertools.pairwise(chans))
            back = sum((b * 9 + 1) * a for a, b in itertools.pairwise(chans))
            flat = self.conv_features()
            heads = 2 if self.kind is Kind.vae else 1
            return convs + back + heads * (flat + 1) * self.latent + (self.latent + 1) * flat
        sizes = self.sizes
        one_way = sum((a + 1) * b for a, b in itertools.pairwise(sizes))
        back = sum((b + 1) * a for a, b in itertools.pairwise(sizes))
        return one_way + back + (sizes[-2] + 1) * sizes[-1] * (self.kind is Kind.vae)

    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from stored JSON; keys missing in older files take their defaults."""
        return cls(**typed_fields(cls, data))


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimiser, schedule, split, device and reproducibility."""

    epochs: int = 50
    batch_size: int = 0  # rows a step; 0 = auto (``sized``): 64, or 128 from LARGE_TABLE rows
    lr: float = 0.0  # Adam's; 0 = auto: 3e-3 at batch 64, 6e-3 where auto chose 128
    weight_decay: float = 0.0  # L2 penalty, as Adam's coupled weight decay
    val_fraction: float = 0.1  # held-out share of rows, evaluated every epoch
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # 0 = chosen by aecli from the problem size
    early_stopping: int = 0  # patience in epochs; 0 = off
    scale: Scale = Scale.auto  # measured: see docs/anomaly.md and benchmarks/quality.py
    checkpoint_every: int = 0  # write the model every N epochs; 0 = only at the end
    precision: Precision = Precision.fp32  # bf16/tf32: faster products, fp32 master weights
    chunk_rows: int = (
        0  # rows train in shuffled chunks of this many (0: aecli/training/_order.py's rule)
    )
    compile: bool = False  # torch.compile the training forward pass
    beta_warmup: int = 0  # VAE: the latent loss weight rises from 0 to beta over N epochs
    layerwise: bool = False  # train one shallow autoencoder a layer, then fine-tune the stack
    finetune_epochs: int = 0  # --layerwise: epochs of the whole stack; 0 = --epochs

    def __post_init__(self) -> None:
        members(self)

    def sized(self, rows: int) -> TrainConfig:
        """The config with an auto batch size and learning rate chosen for ``rows`` rows.

        Small tables train in batches of 64 at 3e-3: 50 epochs of them are few steps, and
        smaller batches take more. From LARGE_TABLE rows there are steps enough, and 128
        at 6e-3 (Goyal et al.'s linear scaling of the rate with the batch) gives the same
        held-out reconstructions and anomaly AUROC in 0.7x the time (docs/training.md).
        The learning rate is scaled only where the batch size was chosen here.
        """
        if self.batch_size and self.lr:
            return self
        large = not self.batch_size and rows >= LARGE_TABLE
        batch = self.batch_size or (LARGE_BATCH if large else SMALL_BATCH)
        lr = self.lr or (LARGE_LR if large else SMALL_LR)
        return dataclasses.replace(self, batch_size=batch, lr=lr)

    @property
    def resumable(self) -> bool:
        """Whether a stopped run of this config can continue: --layerwise's stages cannot."""
        return not self.layerwise

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainConfig:
        """The config from a mapping of parameters (the CLI's flags, the estimator's
        ``get_params()``): the fields listed once, in this dataclass; other keys ignored."""
        return cls(**params_of(cls, params))

    def validate(self) -> None:
        check(self.epochs >= 1, "--epochs", f"must be at least 1, got {self.epochs}")
        auto = "0 chooses it for the table"
        check(self.batch_size >= 0, "--batch-size", f"must be >= 1 ({auto}), got {self.batch_size}")
        check(
            self.lr >= 0 and math.isfinite(self.lr), "--lr", f"must be > 0 ({auto}), got {self.lr}"
        )
        finite(self.weight_decay, "--weight-decay")
        check(self.weight_decay >= 0, "--weight-decay", f"must be >= 0, got {self.weight_decay}")
        check(
            0 <= self.seed < 2**63, "--seed", f"must be in [0, 2^63), got {self.seed}"
        )  # F15: torch and numpy seeds are 64-bit
        check(self.threads <= 4096, "--threads", f"must be at most 4096, got {self.threads}")
        check(
            0.0 <= self.val_fraction < 1.0,
            "--val-fraction",
            f"must be in [0, 1), got {self.val_fraction}",
        )
        check(self.threads >= 0, "--threads", f"must be >= 0, got {self.threads}")
        check(
            self.early_stopping >= 0,
            "--early-stopping",
            f"must be >= 0, got {self.early_stopping}",
        )
        check(self.beta_warmup >= 0, "--beta-warmup", f"must be >= 0, got {self.beta_warmup}")
        check(
            self.finetune_epochs >= 0,
            "--finetune-epochs",
            f"must be >= 0, got {self.finetune_epochs}",
        )
        check(self.chunk_rows >= 0, "--chunk-rows", f"must be >= 0, got {self.chunk_rows}")
        check(
            self.checkpoint_every >= 0,
            "--checkpoint-every",
            f"must be >= 0, got {self.checkpoint_every}",
        )
        check(
            not self.early_stopping or self.val_fraction > 0,
            "--early-stopping",
            "needs held-out rows to watch; set --val-fraction above 0",
        )
        check(
            not self.finetune_epochs or self.layerwise,
            "--finetune-epochs",
            "is for --layerwise (the epochs of the whole stack after its stages)",
        )

    def kl_weight(self, epoch: int) -> float:
        """The share of beta in epoch ``epoch`` (1-based): (epoch - 1) / N, then 1.

        Epoch 1 trains the reconstruction alone; from epoch N + 1 the loss is the
        full (beta-weighted) ELBO. A decoder that learns to use z before the KL
        pulls the posterior to the prior keeps its latent units active.
        """
        if not self.beta_warmup:
            return 1.0
        return min(1.0, (epoch - 1) / self.beta_warmup)

    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from stored JSON; keys missing in older files take their defaults."""
        return cls(**typed_fields(cls, data))


# The auto batch size and learning rate (TrainConfig.sized). 3e-3 was measured against 1e-3
# on held-out digits at 50 epochs: AE/PCA error 0.74-0.87 against 0.89-0.98.
SMALL_BATCH, SMALL_LR = 64, 3e-3
LARGE_BATCH, LARGE_LR = 128, 6e-3
LARGE_TABLE = 4096  # rows: 64 steps an epoch at batch 64


def resolve_config(
    kind: Kind,
    n_inputs: int,
    *,
    hidden: Sequence[int] | None,
    latent: int | None,
    loss: Loss,
    noise: Noise,
    unit_range: bool = True,
    **options: Any,
) -> ModelConfig:
    """Fill the ``auto`` choices (sizes, loss, noise) for this data and kind.

    ``unit_range``: whether the scaled data lies in [0, 1] (see ``default_loss``).
    """
    latent = latent if latent is not None else default_latent(n_inputs)
    if hidden is not None:
        hidden_sizes = tuple(hidden)
    elif options.get("arch") == Arch.conv:
        hidden_sizes = ()  # convolutions take the hidden layers' place
    else:
        hidden_sizes = default_hidden(n_inputs, latent)
    return ModelConfig(
        kind=kind,
        n_inputs=n_inputs,
        hidden=hidden_sizes,
        latent=latent,
        loss=default_loss(kind, unit_range) if loss == Loss.auto else loss,
        noise=default_noise(kind) if noise == Noise.auto else noise,
        **options,
    )
