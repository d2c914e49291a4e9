"""The progress bar of a training: rich, on stderr, for ``aecli train`` and notebooks.

Shown only on a terminal (``train``) or when asked (``Autoencoder(verbose=True)``: rich
draws it in a Jupyter cell too). It fits an 80-column terminal: a fixed-width bar, and
each loss term once (for most kinds the loss is the reconstruction term itself).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aecli.train import EpochStats

BAR_WIDTH = 12
_SHORT = {"reconstruction": "recon"}  # the log and history_ keep the full names


def epoch_terms(stats: EpochStats) -> str:
    """``loss 0.0123 sparsity 0.004 val 0.0145``: a term equal to the loss is not repeated."""
    loss = stats.terms.get("loss")
    shown = [f"loss {loss:.4g}"] if loss is not None else []
    shown += [
        f"{_SHORT.get(k, k)} {v:.4g}" for k, v in stats.terms.items() if k != "loss" and v != loss
    ]
    if stats.val_loss is not None:
        shown.append(f"val {stats.val_loss:.4g}")
    return " ".join(shown)


def short_stage(stage: str | None) -> str:
    """``layer 2/3`` for --layerwise's ``layer 2 of 3: 64-32-64`` (the sizes are in info)."""
    if not stage:
        return ""
    return stage.split(":")[0].replace(" of ", "/") + " "


class EpochBar:
    """A rich progress bar on stderr: on a terminal unless ``quiet``, or when ``forced``."""

    def __init__(self, total: int, quiet: bool, forced: bool = False) -> None:
        self.total = total
        self.forced = forced
        self.enabled = not quiet and (forced or sys.stderr.isatty())
        self._bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.console import Console

        # Forced (a notebook): the last frame stays, so the cell shows how training went.
        self._bar = make_progress(Console(stderr=True), transient=not self.forced)
        self._bar.start()
        self._task = self._bar.add_task("train", total=self.total, terms="", stage="")
        self._done = 0
        return self.update

    def update(self, stats: EpochStats) -> None:
        self._done += 1  # --layerwise runs several stages of epochs: count them all
        self._bar.update(
            self._task,
            completed=self._done,
            terms=epoch_terms(stats),
            stage=short_stage(stats.stage),
        )

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def make_progress(console: Any, transient: bool = True) -> Any:
    """Counts, bar and time keep their width; the loss terms give way (an ellipsis) first."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column

    def fixed() -> Column:
        return Column(no_wrap=True)

    return Progress(
        TextColumn("{task.fields[stage]}epoch", table_column=fixed()),
        MofNCompleteColumn(table_column=fixed()),
        BarColumn(bar_width=BAR_WIDTH, table_column=fixed()),
        TimeRemainingColumn(compact=True, table_column=fixed()),
        TextColumn(
            "{task.fields[terms]}",
            table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
        ),
        console=console,
        transient=transient,
        expand=True,
    )
