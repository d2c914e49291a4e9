"""``train --resume``: which flags were given, and picking a stopped run of the same command
up (``--checkpoint-every``, aecli/training/_restart.py). What a resumed file lets change is
checked by ``aecli.training.prepare``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from aecli.fitted import FittedModel


def given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def pick_up(
    params: dict[str, Any], data: str, output: str, resume: str | None
) -> tuple[str | None, str | None, str | None]:
    """This run's fingerprint (with --checkpoint-every), the model file to resume, if any,
    and a note to say.

    A stopped run of the same flags and data at ``-o`` is continued, as if ``--resume``
    named it: what a restarted torchrun worker or a requeued job needs.
    """
    stdin = data == "-"  # never a file named '-' in the working directory (findings4 #3)
    if not params.get("checkpoint_every") or output == "-" or stdin or not os.path.isfile(data):
        return None, resume, None
    from aecli.config import TrainConfig
    from aecli.training import fingerprint, stopped_run

    if not TrainConfig.from_params(params).resumable:  # a restart trains afresh
        return None, resume, None

    run = fingerprint(params, data)
    note = None
    if resume is None:
        again, note = stopped_run(output, run)
        resume = output if again else None
    return run, resume, note


def load(resume: str) -> FittedModel:
    """The model file to continue."""
    from aecli import modelfile

    return modelfile.load(resume)
