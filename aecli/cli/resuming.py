"""``train --resume``: which flags were given, whether the model file lets them change, and
picking a stopped run of the same command up (``--checkpoint-every``, aecli/restart.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from aecli.config import TrainConfig
    from aecli.fitted import FittedModel


# Flag parameters whose config field has another name.
_FIELD = {"compile_model": "compile"}


def given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def train_config(resumed: FittedModel, asked: TrainConfig, given: set[str]) -> TrainConfig:
    from aecli import resume

    fields = {_FIELD.get(name, name) for name in given} & set(resume.RESUMABLE_TRAIN)
    return resume.resumed_train_config(resumed, {f: getattr(asked, f) for f in fields})


def check_flags(resumed: FittedModel, params: dict[str, Any], given: set[str]) -> None:
    """A flag given with --resume must agree with the model file (repeating it is fine)."""
    from aecli import resume
    from aecli.sizes import parse_channels, parse_hidden

    asked = {}
    for name in given:
        value = params[name]
        value = getattr(value, "value", value)
        if name == "hidden" and value != "auto":
            value = tuple(parse_hidden(value) or ())
        if name == "channels":
            value = parse_channels(value)
        asked[_FIELD.get(name, name)] = value
    resume.check_unchanged(resumed, asked)


def pick_up(
    params: dict[str, Any], data: str, output: str, resume: str | None, say: Callable[[str], None]
) -> tuple[str | None, str | None]:
    """This run's fingerprint (with --checkpoint-every), and the model file to resume, if any.

    A stopped run of the same flags and data at ``-o`` is continued, as if ``--resume``
    named it: what a restarted torchrun worker or a requeued job needs.
    """
    stdin = data == "-"  # never a file named '-' in the working directory (findings4 #3)
    if not params.get("checkpoint_every") or output == "-" or stdin or not os.path.isfile(data):
        return None, resume
    if params.get("layerwise"):  # its stages cannot be resumed: a restart trains afresh
        return None, resume
    from aecli import restart

    run = restart.fingerprint(params, data)
    if resume is None:
        again, note = restart.stopped_run(output, run)
        if note is not None:
            say(f"aecli: {note}")
        resume = output if again else None
    return run, resume


def start(ctx: typer.Context, resume: str, asked: TrainConfig) -> tuple[FittedModel, TrainConfig]:
    """The model to continue and the training config the run takes from it and the flags."""
    from aecli import modelfile

    resumed = modelfile.load(resume)
    given_names = {name for name in ctx.params if given(ctx, name)}
    config = train_config(resumed, asked, given_names)
    check_flags(resumed, ctx.params, given_names)
    return resumed, config
