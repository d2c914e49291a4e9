"""One training pipeline for every caller: ``prepare`` a run, then ``Run.execute`` it.

``aecli train``, ``Autoencoder.fit``, each torchrun rank, the tests and the benchmarks
call these two, so the same request and rows give the same model however they arrive
(issue 27), and there is no second recipe (issue 38). ``prepare`` checks everything the
request knows, before a row is read: the configs, the flags another flag makes
meaningless, ``--layerwise``'s refusals, what a resumed file lets change; it resolves the
device and runtime and joins torchrun's group. ``execute`` then reads top to bottom:
read the rows (loaded, or streamed from disk: the same model either way), scale them
(the scaler decides a vae's loss), resolve the model's ``auto`` choices, build, fit,
keep, and say which file the model belongs in.

Importing this module loads no torch: the steps (aecli/training/_recipe.py) are imported
when a run executes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aecli.choices import choice
from aecli.config import (
    Activation,
    Arch,
    Kind,
    Loss,
    ModelConfig,
    Noise,
    TrainConfig,
    default_hidden,
    params_of,
    resolve_config,
)
from aecli.errors import UsageError
from aecli.fields import field_of
from aecli.sizes import DEFAULT_CHANNELS, check_image, image_of

if TYPE_CHECKING:
    import torch

    from aecli.fitted import FittedModel
    from aecli.io import ReadStats, Table
    from aecli.scaler import Scaler
    from aecli.training._distributed import World
    from aecli.training._loop import EpochCallback, History

_M = ModelConfig()


@dataclass(frozen=True)
class ModelRequest:
    """The model asked for, before the data decides its ``auto`` parts.

    ``hidden`` and ``latent`` None mean auto; so do ``Loss.auto`` and ``Noise.auto``.
    Strings are accepted for the enum fields (the estimator's parameters) and checked here,
    by ``choice``: the one place an unknown kind, loss... is refused.
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

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ModelRequest:
        """The request from a mapping of parameters (the CLI's flags, the estimator's
        ``get_params()``): the fields listed once, in this dataclass; other keys ignored."""
        return cls(**params_of(cls, params))

    @property
    def noise_resolved(self) -> Noise:
        """The noise this request trains with (``auto`` depends on the kind alone)."""
        if self.noise is not Noise.auto:
            return self.noise
        return Noise.gaussian if self.kind is Kind.denoise else Noise.none

    def resolve(self, n_features: int, row_shape: tuple[int, ...], scaler: Scaler) -> ModelConfig:
        """The model config for rows of this width and shape, scaled by ``scaler``, checked.

        On a table that auto scales robustly a vae's decoder is Gaussian (mse), as
        cross-entropy needs values in [0, 1] (``scaler.vae_bce``).
        """
        conv = self.arch is Arch.conv
        config = resolve_config(
            self.kind, n_features, hidden=self.hidden, latent=self.latent, loss=self.loss,
            noise=self.noise, unit_range=scaler.vae_bce, tied=self.tied,
            activation=self.activation, noise_std=self.noise_std, dropout=self.dropout,
            sparsity_target=self.sparsity_target, sparsity_weight=self.sparsity_weight,
            beta=self.beta, arch=self.arch, channels=self.channels if conv else (),
            image=image_of(row_shape) if conv else (),
        )  # fmt: skip
        config.validate()
        return config


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
    """A checked, resolved training run; ``execute`` reads the rows and trains.

    ``resumed``: the model file a resumed run continues (its config, scaler and columns),
    with ``train_config`` already the one it continues under. ``fingerprint``: the
    command's (aecli/training/_restart.py), kept in a stopped run's file.
    """

    source: str | Table
    request: ModelRequest
    train_config: TrainConfig
    device: torch.device
    world: World
    output: str = "-"
    read_options: Mapping[str, Any] = field(default_factory=dict)
    resumed: FittedModel | None = None
    fingerprint: str | None = None

    def epochs_in_all(self) -> int:
        """What a progress bar counts: --layerwise trains each layer pair, then the stack.

        Known before the model is resolved: an auto ``hidden`` is one layer (none for conv).
        """
        config = self.train_config
        if not config.layerwise:
            return config.epochs
        if self.request.hidden is not None:
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
        """Read, scale, resolve, build, fit and keep; the model comes back on the CPU.

        ``on_read`` hears of dropped rows once they are counted: as a table in memory is
        read, or, for one streamed from disk, after training (its scaler counts them).
        ``should_stop`` is asked as each epoch starts (at every step under torchrun); yes
        stops the run as Ctrl-C does. ``checkpoint`` receives the model every
        ``checkpoint_every`` epochs.
        """
        from aecli.training import _recipe as recipe
        from aecli.training._order import source_of

        table, stats, streamed = self._rows()
        if on_read is not None and stats is not None and not streamed:
            on_read(stats)
        source = source_of(table)
        self.train_config = self.train_config.sized(source.rows)  # auto batch size and rate
        if self.resumed is not None:
            self.resumed.check_input(table, _described(self.source))
            config, scaler = self.resumed.config, self.resumed.scaler
        else:
            bce = self.request.loss is Loss.bce
            scaler = recipe.scale(source, self.train_config, bce, _described(self.source))
            config = self.request.resolve(table.n_features, table.row_shape, scaler)
            _check_id_name(getattr(table, "id_name", None), config.latent)
        # A run that fails must not replace a model that was there before it.
        keep_old = self.output != "-" and os.path.exists(self.output)
        saved = checkpoint
        if checkpoint is not None:

            def saved(fitted: FittedModel) -> None:
                nonlocal keep_old
                checkpoint(fitted)
                keep_old = False

        with recipe.threads_kept():  # the caller's torch thread count, back after the run
            session = recipe.build(table, source, config, scaler, self, streamed)
            history = recipe.train(session, on_epoch, saved, should_stop)
            fitted = recipe.keep(session, history)
        if on_read is not None and stats is not None and streamed:
            on_read(stats)
        _check_finite(fitted)
        target = self.output
        if history.stop == "non-finite" and keep_old:
            target = beside(self.output, "last-finite")
        return Result(fitted, history, target)

    def _rows(self) -> tuple[Any, ReadStats | None, bool]:
        """The rows, and whether they stream from disk: the one stream-or-load choice."""
        from aecli.io import ReadStats, disk_rows, read_table

        if not isinstance(self.source, str):
            table, stats, streamed = self.source, None, False
        else:
            options = dict(self.read_options)
            if self.resumed is not None:
                options["model_columns"] = self.resumed.columns
            if _streamed(self.source, self.train_config, self.world):
                keys = ("columns", "id_column", "allow_nan", "model_columns")
                table = disk_rows(self.source, **{k: options.get(k) for k in keys})
                stats, streamed = table.stats, True  # counted while the scaler is fitted
            else:
                stats, streamed = ReadStats(), False
                table = read_table(self.source, stats=stats, **options)
        shape = self.request.image_shape
        if shape is not None:
            check_image(shape, table.n_features)
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
    resume: FittedModel | None = None,
    fingerprint: str | None = None,
    join: bool = False,
) -> Run:
    """Check the request and config and resolve the device and runtime, before any row.

    ``source``: a path (read with ``read_options``) or a table already in memory.
    ``given``: the parameters the user gave (the rest are defaults): a given flag that
    the request makes meaningless is refused, and with ``resume`` (a loaded model file)
    the given training fields that may change replace the file's, while the fixed ones
    must repeat it. ``fingerprint``: kept in the files of a stopped run. ``join``: take
    this process's place in torchrun's group.
    """
    from aecli.training import _meaningful as meaningful

    given = frozenset(given)
    train_config.validate()
    if resume is not None:
        train_config = _resumed(resume, request, train_config, given)
    else:
        meaningful.check(request.kind, request.noise_resolved, request.arch, given)
    kind = request.kind if resume is None else resume.config.kind
    meaningful.check_warmup(train_config.beta_warmup, kind)
    if train_config.layerwise:
        on_disk = isinstance(source, str) and _streamed(source, train_config, None)
        meaningful.refuse_layerwise(
            request.kind, request.arch, request.tied, request.hidden, train_config.compile,
            on_disk, resume is not None,
        )  # fmt: skip
    from aecli.training._device import check_runtime, resolve_device  # torch, from here

    device = resolve_device(train_config.device)
    check_runtime(train_config.precision, device, train_config.compile)
    world = _join(device, train_config.compile) if join else _alone()
    return Run(
        source, request, train_config, device, world, output, dict(read_options or {}),
        resume, fingerprint,
    )  # fmt: skip


def _resumed(
    resumed: FittedModel, request: ModelRequest, asked: TrainConfig, given: frozenset[str]
) -> TrainConfig:
    """The training config a resumed run continues under, the given fields checked.

    Given fixed fields (every model field, the split and the scaling) must repeat the
    file's values; given resumable ones (epochs, lr...) replace them.
    """
    from aecli.training import _resume as resume

    fields = {field_of(name) for name in given}
    values = {**dataclasses.asdict(request), **dataclasses.asdict(asked)}
    if "hidden" in fields and request.hidden is None:  # --hidden auto: not a value to compare
        fields.discard("hidden")
    resume.check_unchanged(resumed, {f: values[f] for f in fields if f in values})
    changes = {f: getattr(asked, f) for f in fields & set(resume.RESUMABLE_TRAIN)}
    config = resume.resumed_train_config(resumed, changes)
    config.validate()
    return config


def _streamed(source: str, config: TrainConfig, world: World | None) -> bool:
    """Whether the rows train from disk: a memory decision (aecli.io.should_stream), or a
    .npy under torchrun, which each rank reads its own rows of."""
    from aecli.io import should_stream

    sharded = world is not None and world.many and source.lower().endswith(".npy")
    return sharded or should_stream(source, config.chunk_rows)


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
    from aecli.training import _distributed as distributed

    world = distributed.from_env()
    if not world.many:
        return world
    if compile_model:
        raise UsageError("is not supported under torchrun yet; leave it out", flag="--compile")
    return distributed.start(world, device)


def _alone() -> World:
    from aecli.training._distributed import World

    return World()


def _described(source: str | Table) -> str:
    from aecli.io import describe

    return describe(source) if isinstance(source, str) else "X"


def beside(path: str, tag: str) -> str:
    """``dir/name.TAG.ext`` for ``dir/name.ext``."""
    target = Path(path)
    return str(target.with_name(f"{target.stem}.{tag}{target.suffix}"))
