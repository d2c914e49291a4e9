"""Typed errors that carry what the user must see.

The core raises these; only the CLI turns them into a one-line message on
stderr and an exit code, so library users get exceptions, not prints.
"""

from __future__ import annotations


class AecliError(Exception):
    """An expected failure with a message fit for the user; exit code 1."""

    exit_code = 1


class DataError(AecliError):
    """Input data that cannot be used, located as precisely as we know.

    ``where`` is rendered as ``file:line:column`` so that editors and
    terminals can jump to it.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.column = column
        super().__init__(self._render())

    def _render(self) -> str:
        where = [str(p) for p in (self.source, self.line, self.column) if p is not None]
        # Names from the data may hold line breaks; the message stays one line.
        message = self.message.replace("\r", "\\r").replace("\n", "\\n")
        return f"{':'.join(where)}: {message}" if where else message


class ModelFileError(AecliError):
    """A model file that is missing, damaged, foreign or of an unknown format."""


class UsageError(AecliError):
    """A bad combination of flags or values; exit code 2 like any usage error.

    ``flag`` names the option at fault so the message can point at it.
    """

    exit_code = 2

    def __init__(self, message: str, *, flag: str | None = None) -> None:
        self.flag = flag
        super().__init__(f"{flag}: {message}" if flag else message)


class TrainingError(AecliError):
    """Training could not go on (for example the loss became NaN)."""
