"""The training progress bar: rich, on stderr, only on a terminal."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aecli.train import EpochStats


class EpochBar:
    """A rich progress bar on stderr, only when stderr is a terminal and not --quiet."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.enabled = not quiet and sys.stderr.isatty()
        self._bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("epoch"),
            MofNCompleteColumn(),
            BarColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[terms]}"),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=self.total, terms="")
        return self.update

    def update(self, stats: EpochStats) -> None:
        terms = " ".join(f"{k} {v:.4g}" for k, v in stats.terms.items())
        if stats.val_loss is not None:
            terms += f" val {stats.val_loss:.4g}"
        self._bar.update(self._task, completed=stats.epoch, terms=terms)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


# -- encode / reconstruct / sample -------------------------------------------------
