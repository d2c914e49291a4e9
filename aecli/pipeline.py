"""One training pipeline for every caller: ``prepare`` a run, then ``Run.execute`` it.

``aecli train``, ``Autoencoder.fit`` and each torchrun rank call these two, so the same
request and rows give the same model however they arrive (issue 27). ``prepare`` checks
the request and the training config and resolves the device and runtime before a row is
read; ``execute`` reads the rows (loaded, or streamed from disk: the same model either
way), checks their shape, fits the scaler (which decides a vae's loss), resolves the
model's ``auto`` choices, trains and says which file the model belongs in. Each check
and each default is written here once; the callers only parse and report.

Importing this module loads no torch: ``aecli.api`` is imported when a run executes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aecli.config import (
    Activation,
    Arch,
    Kind,
    Loss,
    ModelConfig,
    Noise,
    TrainConfig,
    choice,
    default_hidden,
    resolve_config,
)
from aecli.errors import UsageError
from aecli.sizes import DEFAULT_CHANNELS, image_of

if TYPE_CHECKING:
    import torch

    from aecli.distributed import World
    from aecli.fitted import FittedModel
    from aecli.io import ReadStats, Table
    from aecli.scaler import Scaler
    from aecli.train import EpochCallback, History

_M = ModelConfig()


@dataclass(frozen=True)
class ModelRequest:
    """The model asked for, before the data decides its ``auto`` parts.

    ``hidden`` and ``latent`` None mean auto; so do ``Loss.auto`` and ``Noise.auto``.
    Strings are accepted for the enum fields (the estimator's parameters) and checked here.
    """

    kind: Kind = Kind.basic
    hidden: tuple[int, ...] | None = None
    latent: int | None = None
    loss: Loss = Loss.auto
    noise: Noise = Noise.auto
    arch: Arch = Arch.mlp
    channels: tuple[int, ...] = DEFAULT_CHANNELS
    image_shape: tuple[int, ...] | None = None
    tied: bool = _M.tied
    activation: Activation = Activation.elu
    noise_std: float = _M.noise_std
    dropout: float = _M.dropout
    sparsity_target: float = _M.sparsity_target
    sparsity_weight: float = _M.sparsity_weight
    beta: float = _M.beta

    def __post_init__(self) -> None:
        for name, enum, flag in (
            ("kind", Kind, "--kind"),
            ("loss", Loss, "--loss"),
            ("noise", Noise, "--noise"),
            ("arch", Arch, "--arch"),
            ("activation", Activation, "--activation"),
        ):
            object.__setattr__(self, name, choice(enum, getattr(self, name), flag))

    def resolve(self, table: Any, train_config: TrainConfig) -> tuple[ModelConfig, Scaler]:
        """The scaler fitted on ``table`` and the model config it implies, checked.

        The scaler comes first: on a table that auto scales robustly a vae's decoder is
        Gaussian (mse), as cross-entropy needs values in [0, 1] (``scaler.vae_bce``).
        """
        from aecli import api

        scaler = api.fit_scaler(table, train_config, self.loss is Loss.bce)
        conv = self.arch is Arch.conv
        config = resolve_config(
            self.kind.value,
            table.n_features,
            hidden=self.hidden,
            latent=self.latent,
            loss=self.loss.value,
            noise=self.noise.value,
            unit_range=scaler.vae_bce,
            tied=self.tied,
            activation=self.activation.value,
            noise_std=self.noise_std,
            dropout=self.dropout,
            sparsity_target=self.sparsity_target,
            sparsity_weight=self.sparsity_weight,
            beta=self.beta,
            arch=self.arch.value,
            channels=self.channels if conv else (),
            image=image_of(table.row_shape) if conv else (),
        )
        config.validate()
        return config, scaler


@dataclass
class Result:
    """What a run made: the model, its history, and where it goes.

    ``target`` is ``output``, or ``NAME.last-finite.EXT`` beside it when training diverged
    and a model that was there before the run must not be replaced by a worse one.
    """

    fitted: FittedModel
    history: History
    target: str


@dataclass
class Run:
    """A checked, resolved training run; ``execute`` reads the rows and trains."""

    source: str | Table
    request: ModelRequest
    train_config: TrainConfig
    device: torch.device
    world: World
    output: str = "-"
    read_options: Mapping[str, Any] = field(default_factory=dict)
    resumed: FittedModel | None = None
    given: frozenset[str] = frozenset()
    fingerprint: str | None = None

    def resuming(self, resumed: FittedModel, train_config: TrainConfig) -> None:
        """Continue ``resumed`` (its config, scaler and columns) under ``train_config``."""
        train_config.validate()
        self.resumed, self.train_config = resumed, train_config

    def epochs_in_all(self) -> int:
        """What a progress bar counts: --layerwise trains each layer pair, then the stack.

        Known before the model is resolved: an auto ``hidden`` is one layer (none for conv).
        """
        config = self.train_config
        if not config.layerwise:
            return config.epochs
        if self.resumed is not None:
            hidden = len(self.resumed.config.hidden)
        elif self.request.hidden is not None:
            hidden = len(self.request.hidden)
        else:
            hidden = 0 if self.request.arch is Arch.conv else len(default_hidden(1, 1))
        return (hidden + 1) * config.epochs + (config.finetune_epochs or config.epochs)

    def execute(
        self,
        on_epoch: EpochCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        checkpoint: Callable[[FittedModel], None] | None = None,
        on_read: Callable[[ReadStats], None] | None = None,
    ) -> Result:
        """Read, resolve and train; ``on_read`` hears of dropped rows once they are counted.

        A table in memory is counted as it is read; one streamed from disk while its scaler
        is fitted, so ``on_read`` is then called after training.
        """
        from aecli import api

        table, stats, streamed = self._rows()
        if on_read is not None and stats is not None and not streamed:
            on_read(stats)
        scaler = None
        if self.resumed is not None:
            self.resumed.check_input(table, _described(self.source))
            model_config = self.resumed.config
        else:
            model_config, scaler = self.request.resolve(table, self.train_config)
            from aecli import meaningful

            meaningful.check(model_config, self.given)
            _check_id_name(getattr(table, "id_name", None), model_config.latent)
        # A run that fails must not replace a model that was there before it.
        keep_old = self.output != "-" and os.path.exists(self.output)
        saved = checkpoint
        if checkpoint is not None:

            def saved(fitted: FittedModel) -> None:
                nonlocal keep_old
                checkpoint(fitted)
                keep_old = False

        fitted, history = api.train(
            table,
            model_config,
            self.train_config,
            on_epoch,
            resume=self.resumed,
            checkpoint=saved,
            scaler=scaler,
            world=self.world,
            stop_requested=should_stop,
            run=self.fingerprint,
            device=self.device,
        )
        if on_read is not None and stats is not None and streamed:
            on_read(stats)
        _check_finite(fitted)
        target = self.output
        if history.stop == "non-finite" and keep_old:
            target = beside(self.output, "last-finite")
        return Result(fitted, history, target)

    def _rows(self) -> tuple[Any, ReadStats | None, bool]:
        """The rows as a table in memory or on disk: the one stream-or-load choice."""
        from aecli.io import ReadStats, disk_rows, read_table, should_stream

        if not isinstance(self.source, str):
            table, stats, streamed = self.source, None, False
        else:
            options = dict(self.read_options)
            if self.resumed is not None:
                options["model_columns"] = self.resumed.columns
            sharded = self.world.many and self.source.lower().endswith(".npy")
            if should_stream(self.source, self.train_config.chunk_rows) or sharded:
                keys = ("columns", "id_column", "allow_nan", "model_columns")
                table = disk_rows(self.source, **{k: options.get(k) for k in keys})
                stats, streamed = table.stats, True  # counted while the scaler is fitted
            else:
                stats, streamed = ReadStats(), False
                table = read_table(self.source, stats=stats, **options)
        shape = self.request.image_shape
        if shape is not None:
            if math.prod(shape) != table.n_features:
                text = "x".join(map(str, shape))
                raise UsageError(
                    f"{text} is {math.prod(shape)} values, but rows have {table.n_features}",
                    flag="--image-shape",
                )
            table.row_shape = shape
        return table, stats, streamed


def prepare(
    source: str | Table,
    request: ModelRequest,
    train_config: TrainConfig,
    *,
    output: str = "-",
    read_options: Mapping[str, Any] | None = None,
    given: Iterable[str] = (),
    join: bool = False,
) -> Run:
    """Check the request and config and resolve the device and runtime, before any row.

    ``source``: a path (read with ``read_options``) or a table already in memory.
    ``given``: the flags the user gave, checked against the resolved model
    (aecli/meaningful.py). ``join``: take this process's place in torchrun's group.
    """
    from aecli.device import check_runtime, resolve_device

    train_config.validate()
    if train_config.layerwise:  # refused before any row is read (issue 38)
        from aecli import layerwise
        from aecli.io import should_stream

        on_disk = isinstance(source, str) and should_stream(source, train_config.chunk_rows)
        layerwise.refuse(
            request.kind.value, request.arch.value, request.tied, request.hidden,
            train_config.compile, on_disk, False,
        )  # fmt: skip
    device = resolve_device(train_config.device)
    check_runtime(train_config.precision, device, train_config.compile)
    world = _join(device, train_config.compile) if join else _alone()
    return Run(
        source,
        request,
        train_config,
        device,
        world,
        output,
        dict(read_options or {}),
        given=frozenset(given),
    )


def _check_id_name(id_name: str | None, latent: int) -> None:
    """An id column named as an output column of the model (``z0``) is refused before training.

    ``encode`` would write two ``z0`` columns that no reader takes back (findings4 #9).
    """
    outputs = [f"z{i}" for i in range(latent)] + ["score", "anomaly"]
    if id_name in outputs:
        raise UsageError(
            f"{id_name!r} is the name of a column the model's outputs have (encode writes "
            f"z0..z{latent - 1}, score writes score and anomaly); rename it in the data",
            flag="--id-column",
        )


def _check_finite(fitted: FittedModel) -> None:
    """A training whose weights, Adam moments or statistics overflowed has failed.

    Whatever its loss says: the file would be one that every command refuses, and it must
    not replace the model at ``-o`` (findings4 #1: data near 1e18 under ``--scale none``
    kept a finite loss while Adam's second moments overflowed float32).
    """
    from aecli.modelchecks import first_non_finite

    name = first_non_finite(fitted)
    if name is not None:
        from aecli.errors import TrainingError

        scale = fitted.scaler.method
        raise TrainingError(
            f"training diverged: {name} overflowed float32 (the data, scaled by --scale "
            f"{scale}, is too large; try --scale standard or a smaller --lr); nothing saved"
        )


def _join(device: torch.device, compile_model: bool) -> World:
    """This process's world: one process, or its place in torchrun's group (joined here).

    A plain run returns at once without importing ``torch.distributed``.
    """
    from aecli import distributed

    world = distributed.from_env()
    if not world.many:
        return world
    if compile_model:
        raise UsageError("is not supported under torchrun yet; leave it out", flag="--compile")
    return distributed.start(world, device)


def _alone() -> World:
    from aecli.distributed import World

    return World()


def _described(source: str | Table) -> str:
    from aecli.io import describe

    return describe(source) if isinstance(source, str) else "X"


def beside(path: str, tag: str) -> str:
    """``dir/name.TAG.ext`` for ``dir/name.ext``."""
    target = Path(path)
    return str(target.with_name(f"{target.stem}.{tag}{target.suffix}"))
