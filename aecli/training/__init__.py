"""Training: the one way a model is trained, and everything a caller of it needs.

This module is the package's face, as ``httpx/__init__.py`` is httpx's: the CLI, the
estimator, the benchmarks and the tests use the names listed here, and the modules behind
it (``_pipeline``, ``_recipe``, ``_loop`` and the rest) are private. A run is::

    run = prepare(source, ModelRequest(kind="vae"), TrainConfig(epochs=20))
    result = run.execute(on_epoch)   # result.fitted, result.history, result.target

Names load on first use, so importing the package costs no torch: ``aecli --help`` and
the torch-free commands stay fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

# Each public name and the private module that defines it.
_EXPORTS = {
    # the run: one request, one recipe
    "ModelRequest": "_pipeline",
    "Run": "_pipeline",
    "Result": "_pipeline",
    "prepare": "_pipeline",
    # what a run reports as it goes
    "EpochStats": "_loop",
    "EpochCallback": "_loop",
    "History": "_loop",
    "mean_error": "_divergence",
    "EpochBar": "_progressbar",
    "training_summary": "_progressbar",
    "epochs_text": "_progressbar",
    "epoch_terms": "_progressbar",
    "short_stage": "_progressbar",
    "EpochLog": "_trainlog",
    "record_of": "_trainlog",
    "read_log": "_trainlog",
    # continuing a stopped run
    "FIXED_MODEL": "_resume",
    "FIXED_TRAIN": "_resume",
    "RESUMABLE_TRAIN": "_resume",
    "fingerprint": "_restart",
    "stopped_run": "_restart",
    # processes and devices
    "World": "_distributed",
    "BatchShare": "_distributed",
    "agree": "_distributed",
    "keep_freed_memory": "_device",
    "missing_compiler": "_device",
    "choose_threads": "_device",
    "matmul_precision": "_device",
    # what benchmarks/train_speed.py's ceilings are built from: the optimizer, the products
    # the hand-written step runs in bf16, and how a CUDA graph is warmed up
    "make_optimizer": "_loop",
    "bf16_product": "_fastpath",
    "WARMUP_STEPS": "_graphs",
    "on_side_stream": "_graphs",
}

__all__ = [
    "FIXED_MODEL",
    "FIXED_TRAIN",
    "RESUMABLE_TRAIN",
    "WARMUP_STEPS",
    "BatchShare",
    "EpochBar",
    "EpochCallback",
    "EpochLog",
    "EpochStats",
    "History",
    "ModelRequest",
    "Result",
    "Run",
    "World",
    "agree",
    "bf16_product",
    "choose_threads",
    "epoch_terms",
    "epochs_text",
    "fingerprint",
    "keep_freed_memory",
    "leave_group",
    "make_optimizer",
    "matmul_precision",
    "mean_error",
    "missing_compiler",
    "on_side_stream",
    "prepare",
    "read_log",
    "record_of",
    "short_stage",
    "stopped_run",
    "training_summary",
]


def __getattr__(name: str) -> Any:
    """A public name, from its module (imported now, the first time it is asked for)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


def leave_group() -> None:
    """Leave torchrun's process group, where this process joined one (else nothing).

    Imports nothing: on the way out of a Ctrl-C, torch's import may have been cut short.
    """
    distributed = sys.modules.get(f"{__name__}._distributed")
    if distributed is not None:
        distributed.stop()


if TYPE_CHECKING:
    from aecli.training._device import (
        choose_threads,
        keep_freed_memory,
        matmul_precision,
        missing_compiler,
    )
    from aecli.training._distributed import BatchShare, World, agree
    from aecli.training._divergence import mean_error
    from aecli.training._fastpath import bf16_product
    from aecli.training._graphs import WARMUP_STEPS, on_side_stream
    from aecli.training._loop import EpochCallback, EpochStats, History, make_optimizer
    from aecli.training._pipeline import ModelRequest, Result, Run, prepare
    from aecli.training._progressbar import (
        EpochBar,
        epoch_terms,
        epochs_text,
        short_stage,
        training_summary,
    )
    from aecli.training._restart import fingerprint, stopped_run
    from aecli.training._resume import FIXED_MODEL, FIXED_TRAIN, RESUMABLE_TRAIN
    from aecli.training._trainlog import EpochLog, read_log, record_of
