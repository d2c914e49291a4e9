"""The Python API's conventions: aecli's errors as Python's, its inputs as a DataFrame.

The estimator raises what scikit-learn users catch (ValueError, OSError subclasses)
with the parameter's name, not the CLI's flag, and takes a path or a pyarrow Table
where an array is expected.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from typing import Any

from aecli.errors import AecliError, UsageError


@contextlib.contextmanager
def as_value_errors() -> Iterator[None]:
    """aecli's errors as ValueError, the exception scikit-learn users catch.

    A flag name in the message becomes the keyword argument's name.
    """
    try:
        yield
    except UsageError as exc:
        if not exc.flag:
            raise ValueError(_keywords(str(exc))) from None
        name = exc.flag.lstrip("-").replace("-", "_")
        message = str(exc).removeprefix(f"{exc.flag}: ")
        raise ValueError(f"{name}: {_keywords(message)}") from None
    except AecliError as exc:
        raise ValueError(_keywords(str(exc))) from None


def _keywords(message: str) -> str:
    """A flag's advice in the estimator's words: 'use --device cpu' as "use device='cpu'"."""
    import re

    def keyword(match: re.Match[str]) -> str:
        return f"{match.group(1).replace('-', '_')}={match.group(2)!r}"

    return re.sub(r"--([a-z][a-z-]*) ([\w.:]+)", keyword, message)


def text_columns(X: Any) -> None:
    """A DataFrame's columns that are not numbers, named (numpy's 'could not convert string
    to float: 'cardio-00000'' names none)."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is None or not hasattr(X, "select_dtypes"):
        return
    text = [str(c) for c in X.select_dtypes(exclude=["number", "bool"]).columns]
    if text:
        named = ", ".join(repr(c) for c in text[:5])
        shown = named + (", ..." if len(text) > 5 else "")
        many = len(text) > 1
        raise ValueError(
            f"X: column{'s' if many else ''} {shown} {'hold' if many else 'holds'} text, not "
            f"numbers; leave {'them' if many else 'it'} out, e.g. X.drop(columns=[{named}])"
        )


@contextlib.contextmanager
def as_os_errors(path: str) -> Iterator[None]:
    """save/load failures as Python's own: OSError subclasses naming the path, else ValueError.

    The CLI's wording names its -o flag, which the Python API does not have (F3-11).
    """
    try:
        yield
    except AecliError as exc:
        text = str(exc)
        if isinstance(exc, UsageError) and exc.flag:
            text = text.removeprefix(f"{exc.flag}: ")
        text = text.removeprefix(f"{path}: ")
        for words, error, number in (
            ("no such model file", FileNotFoundError, errno.ENOENT),
            ("does not exist", FileNotFoundError, errno.ENOENT),
            ("is a directory", IsADirectoryError, errno.EISDIR),
            ("not writable", PermissionError, errno.EACCES),
        ):
            if words in text:
                raise error(number, text, path) from None
        raise ValueError(f"{path}: {text}") from None


def tabular(X: Any) -> Any:
    """A path (any format aecli reads) or a pyarrow Table as a DataFrame; else X itself."""
    import os

    if isinstance(X, (str, os.PathLike)):
        import pandas as pd

        from aecli.io import read_table

        with as_value_errors():
            table = read_table(os.fspath(X))
        columns = table.columns or [f"x{i}" for i in range(table.n_features)]
        return pd.DataFrame(table.values, columns=columns)
    if type(X).__module__.startswith("pyarrow") and hasattr(X, "to_pandas"):
        return X.to_pandas()
    return X
