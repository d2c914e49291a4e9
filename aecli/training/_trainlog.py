"""The ``train --log`` file: one JSON object per epoch, written and read here only.

Each line holds ``epoch``, the loss terms of that epoch (``loss``,
``reconstruction`` and the kind's own terms), ``val_loss`` (null without
held-out rows) and ``seconds``. ``aecli curves`` draws it; pandas reads it
with ``read_json(path, lines=True)``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aecli.errors import DataError

if TYPE_CHECKING:
    from aecli.training._loop import EpochStats


def record_of(stats: EpochStats) -> dict[str, Any]:
    """One epoch as a log line holds it (and ``Autoencoder.history_`` a row)."""
    record = {
        "epoch": stats.epoch,
        **stats.terms,
        "val_loss": stats.val_loss,
        "seconds": round(stats.seconds, 6),
    }
    if stats.stage is not None:  # --layerwise
        record["stage"] = stats.stage
    return record


class EpochLog:
    """Collects the epochs and writes the log atomically when training ends.

    Also after Ctrl-C or a NaN loss, so the log of a stopped run is kept. The
    path is checked on entry, before any training, so a bad ``--log`` never
    costs a finished run (F03), and it may not be an input of the run (F04).
    """

    def __init__(self, path: str | None, protect: Sequence[str]) -> None:
        self.path = path
        self.protect = protect
        self.lines: list[str] = []

    def __enter__(self) -> EpochLog:
        if self.path is not None:
            from aecli.io import check_output

            check_output(self.path, "--log", inputs=self.protect)
        return self

    def write(self, stats: EpochStats) -> None:
        self.lines.append(json.dumps(record_of(stats)))

    def mark_diverged(self) -> None:
        """The last line says the run diverged (``"diverged": true``), as ``info`` does."""
        if self.lines:
            record = json.loads(self.lines[-1])
            self.lines[-1] = json.dumps({**record, "diverged": True})

    def __exit__(self, exc_type: object, *exc: object) -> None:
        """Training failed: keep what it logged if that can be done, and say nothing of it.

        Otherwise the caller saves the log after the model (``save``), so a log that
        cannot be written never costs the model (findings3 #2).
        """
        if exc_type is not None:
            self.save()

    def save(self) -> str | None:
        """Write the log; what went wrong, in words, if it could not be written."""
        if self.path is None or not self.lines:
            return None
        from aecli.errors import AecliError
        from aecli.io import STDIO, write_bytes_atomic
        from aecli.io.write import naming_stdout

        text = "\n".join(self.lines) + "\n"
        try:
            if self.path == STDIO:  # F29: - is stdout here as everywhere in aecli
                with naming_stdout():
                    sys.stdout.write(text)
                    sys.stdout.flush()
            else:
                write_bytes_atomic(self.path, text.encode(), protect=self.protect, flag="--log")
        except OSError as exc:
            return str(exc.strerror or exc)
        except AecliError as exc:
            return str(exc)
        self.lines = []
        return None


def read_log(path: str) -> list[dict[str, Any]]:
    """The epochs of a ``train --log`` file; a bad line is a DataError naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise DataError("no such file", source=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read ({exc})", source=path) from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            ok = isinstance(record, dict) and is_number(record["epoch"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise DataError("not a line of an aecli training log", source=path, line=number)
        for key, value in record.items():  # F18: a text where a number belongs
            if key == "diverged" and isinstance(value, bool):
                continue
            if value is not None and not is_number(value):
                raise DataError(f"{key!r} is {value!r}, not a number", source=path, line=number)
        records.append(record)
    if not records:
        raise DataError("empty training log", source=path)
    return records


def is_number(value: Any) -> bool:
    """A JSON number (NaN and Infinity included: a diverged epoch logs them)."""
    return isinstance(value, int | float) and not isinstance(value, bool)
