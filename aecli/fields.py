"""Config fields as files and callers give them: typed, made members, checked, by flag.

The rules ``aecli.config``'s dataclasses share: stored JSON checked against each field's
declared type, text made a choice member (or refused with the words a damaged file has
always been named by), the fields of a mapping of parameters, and values back as JSON.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

from aecli.choices import Activation, Arch, Kind, Loss, Noise, Precision, Scale, choice
from aecli.errors import UsageError


def typed_fields(cls: type, data: Any) -> dict[str, Any]:
    """The known fields of stored JSON, each checked against its declared type.

    A hand-edited or damaged file must fail here with the field's name, not
    deep inside training with a TypeError (F17): ``lr: "fast"``, ``hidden: 5``.
    Lists become tuples; ints are accepted where a float is declared.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} is {type(data).__name__}, not an object")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, kind = data[f.name], str(f.type)
        if kind.startswith("tuple"):
            ok = isinstance(value, list) and all(type(v) is int for v in value)
            value = tuple(value) if ok else value
        elif kind == "float":
            ok = type(value) in (int, float)
        elif kind in _CHOICES:  # text, made a member (or refused) by __post_init__
            ok = isinstance(value, str)
        else:
            ok = type(value).__name__ == kind
        if not ok:
            raise ValueError(f"field {f.name!r} should be {kind}, not {value!r}")
        values[f.name] = value
    return values


def one_of(value: Any, choices: Sequence[Enum], flag: str) -> None:
    names = [str(c) for c in choices]
    check(value in choices, flag, f"must be one of {', '.join(names)}, got {shown(value)}")


# The choice fields, with the flag that names them and the members a config may hold
# (the message is validate's, so a damaged file reads as it always did).
_CHOICES: dict[str, type[Enum]] = {
    c.__name__: c for c in (Kind, Loss, Noise, Activation, Arch, Scale, Precision)
}


def members(config: Any) -> None:
    """Each choice field of ``config`` as its member: text from a file or a caller, checked.

    Kind is refused by ``choice`` (the words every unknown kind gets); the others with
    ``validate``'s words, which a damaged model file has always been named by.
    """
    for f in dataclasses.fields(config):
        enum = _CHOICES.get(str(f.type))
        value = getattr(config, f.name)
        if enum is None or isinstance(value, enum):
            continue
        flag = "--" + f.name.replace("_", "-")
        if enum is Kind:
            member = choice(enum, value, flag)
        else:
            member = next((m for m in enum if str(m) == value), None)
            if member is None:
                resolved = enum not in (Loss, Noise)  # a config holds no auto of these
                valid = ", ".join(str(m) for m in enum if resolved or m != "auto")
                if enum is Precision:
                    valid = "fp32, bf16 or tf32"
                    raise UsageError(f"must be {valid}, got {shown(value)}", flag=flag)
                raise UsageError(f"must be one of {valid}, got {shown(value)}", flag=flag)
        object.__setattr__(config, f.name, member)


# Parameters whose config field has another name (the CLI's --compile: ``compile`` is a builtin).
RENAMED = {"compile_model": "compile"}


def field_of(param: str) -> str:
    """The config field a CLI or estimator parameter sets."""
    return RENAMED.get(param, param)


def params_of(cls: type, params: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``params`` that are fields of the dataclass ``cls``.

    ``compile_model`` (the CLI's parameter for --compile) is the field ``compile``; None
    (a flag not given whose default is chosen later, as --batch-size) is the field's default.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    renamed = {field_of(k): v for k, v in params.items()}
    return {k: v for k, v in renamed.items() if k in names and v is not None}


def plain(data: dict[str, Any]) -> dict[str, Any]:
    """Members as their text, for JSON that any reader takes back."""
    return {k: str(v) if isinstance(v, Enum) else v for k, v in data.items()}


def shown(value: Any) -> str:
    """A value as a message quotes it: a member as its text (``'auto'``)."""
    return repr(str(value)) if isinstance(value, str) else repr(value)


def finite(value: float, flag: str) -> None:
    check(math.isfinite(value), flag, f"must be a finite number, got {value}")


def check(ok: bool, flag: str, message: str) -> None:
    if not ok:
        raise UsageError(message, flag=flag)
