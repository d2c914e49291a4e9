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
def _as_value_errors() -> Iterator[None]:
    """aecli's errors as ValueError, the exception scikit-learn users catch.

    A flag name in the message becomes the keyword argument's name.
    """
    try:
        yield
    except UsageError as exc:
        if not exc.flag:
            raise ValueError(str(exc)) from None
        name = exc.flag.lstrip("-").replace("-", "_")
        message = str(exc).removeprefix(f"{exc.flag}: ")
        raise ValueError(f"{name}: {message}") from None
    except AecliError as exc:
        raise ValueError(str(exc)) from None


@contextlib.contextmanager
def _as_os_errors(path: str) -> Iterator[None]:
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


def _tabular(X: Any) -> Any:
    """A path (any format aecli reads) or a pyarrow Table as a DataFrame; else X itself."""
    import os

    if isinstance(X, (str, os.PathLike)):
        import pandas as pd

        from aecli.io import read_table

        with _as_value_errors():
            table = read_table(os.fspath(X))
        columns = table.columns or [f"x{i}" for i in range(table.n_features)]
        return pd.DataFrame(table.values, columns=columns)
    if type(X).__module__.startswith("pyarrow") and hasattr(X, "to_pandas"):
        return X.to_pandas()
    return X
