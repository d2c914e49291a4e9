"""The training step of a fit, chosen once: a CUDA graph, the hand-written step, or autograd."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from aecli.config import TrainConfig
from aecli.models import Autoencoder
from aecli.training._distributed import World
from aecli.training._fastpath import COMPILE_OPTIONS, Step, manual_step
from aecli.training._graphs import GraphedStep, graphed_step
from aecli.training._optim import FusedAdam


@dataclass(frozen=True)
class TrainingStep:
    """How each batch trains, chosen once per fit (issue 27).

    A CUDA graph's replay where one was captured (``graph``, full batches); else the
    hand-written step (``manual``: aecli/training/_fastpath.py, compiled under --compile); else
    autograd through ``forward`` (the model, or its torch.compile).
    """

    forward: Callable[[torch.Tensor], Any]
    manual: Step | None = None
    graph: GraphedStep | None = None

    @classmethod
    def choose(
        cls,
        model: Autoencoder,
        optimizer: FusedAdam,
        config: TrainConfig,
        world: World | None = None,
    ) -> TrainingStep:
        if config.compile:
            chosen = cls(*compiled_step(model, config.precision, compile_model=True))
        else:
            chosen = cls.eager(model, config.precision)
        size, precision = config.batch_size, config.precision
        graph = graphed_step(model, optimizer, size, precision, chosen.manual, world)
        return dataclasses.replace(chosen, graph=graph)

    @classmethod
    def eager(cls, model: Autoencoder, precision: str) -> TrainingStep:
        """No --compile, no CUDA graph: the hand-written step where one fits, else autograd."""
        return cls(model, manual_step(model, precision, model))


def compiled_step(
    model: Autoencoder, precision: str, compile_model: bool
) -> tuple[Callable[[torch.Tensor], Any], Step | None]:
    """The forward and the hand-written step an epoch runs, compiled where --compile asks.

    torch.compile fuses the work between the matrix products (pays off on GPUs and long
    runs). A model with a hand-written step compiles that step, bf16 included; the others
    compile forward and loss, autograd behind. Weights, snapshots and the optimizer stay
    on ``model`` itself. Without --compile: the model, and the step chosen each epoch.
    """
    if not compile_model:
        return model, None
    manual = manual_step(model, precision, model, compiled=True)
    if manual is not None:
        return model, manual
    return torch.compile(model, options=COMPILE_OPTIONS), None
