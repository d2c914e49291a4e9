"""``train --resume``: which flags were given, and whether the model file lets them change."""

from __future__ import annotations

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
