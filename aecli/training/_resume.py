"""What a resumed run may change and what it keeps from the model file: one declared list.

A resumed run continues the weights, the scaler, the split and Adam's state of
the file, so whatever shaped those is fixed; how the remaining epochs run may
change. Every config field is in exactly one of the lists below (a test checks
it), so a new field cannot be forgotten.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aecli.config import ModelConfig, TrainConfig
from aecli.errors import UsageError
from aecli.fields import shown

if TYPE_CHECKING:
    from aecli.fitted import FittedModel

# Every model field shapes the weights: all are fixed.
FIXED_MODEL = tuple(f.name for f in dataclasses.fields(ModelConfig))
# The scaler, the held-out split and the shuffles come from these (chunk_rows: the chunks
# the rows are shuffled in, aecli/training/_order.py).
FIXED_TRAIN = ("scale", "val_fraction", "seed", "layerwise", "finetune_epochs", "chunk_rows")
# How the remaining epochs run.
RESUMABLE_TRAIN = (
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "device",
    "threads",
    "early_stopping",
    "checkpoint_every",
    "precision",
    "compile",
    "beta_warmup",
)


def stored(resumed: FittedModel, field: str) -> Any:
    """The model file's value of a fixed field."""
    if field in FIXED_MODEL:
        return getattr(resumed.config, field)
    if field in FIXED_TRAIN:
        return getattr(resumed.train_config, field)
    raise KeyError(field)


def check_unchanged(resumed: FittedModel, asked: Mapping[str, Any]) -> None:
    """Values asked for fixed fields must be the file's (repeating them is fine).

    ``asked`` maps field names to values; None means "not given", as does "auto".
    """
    for field in sorted(asked):
        value = asked[field]
        if value is None or value == "auto" or field not in (*FIXED_MODEL, *FIXED_TRAIN):
            continue
        have = stored(resumed, field)
        if value != have:
            raise UsageError(
                f"cannot change on --resume: the model file has {shown(have)}, not {shown(value)}",
                flag="--" + field.replace("_", "-"),
            )


def resumed_train_config(resumed: FittedModel, changes: Mapping[str, Any]) -> TrainConfig:
    """The file's training config with the resumable fields in ``changes`` replaced."""
    unknown = set(changes) - set(RESUMABLE_TRAIN)
    if unknown:
        raise ValueError(f"not resumable: {sorted(unknown)}")
    return dataclasses.replace(resumed.train_config, **changes)
