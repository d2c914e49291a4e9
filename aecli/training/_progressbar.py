"""The progress bar of a training: rich, on stderr, for ``aecli train`` and notebooks.

Shown only on a terminal (``train``) or when asked (``Autoencoder(verbose=True)``: plain
lines where stderr is no terminal, as in a notebook). It fits an 80-column terminal: a
fixed-width bar, and each loss term once (for most kinds the loss is the reconstruction
term itself). The summary line ``train`` and a verbose fit end with is here too.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aecli.fitted import FittedModel
    from aecli.training._loop import EpochStats

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


LINES = 10  # a run outside a terminal prints about this many epoch lines, and the last


class EpochBar:
    """A rich progress bar on stderr: on a terminal unless ``quiet``, or when ``forced``.

    Forced (``Autoencoder(verbose=True)``) where stderr is no terminal (a notebook executed
    by nbconvert or papermill, a script's log file), a bar cannot be drawn: rich's widget
    stayed at ``epoch 0/30`` in a saved notebook (issue 36). There it writes plain lines,
    about ``LINES`` of them and always the last epoch, that every viewer shows.
    """

    def __init__(self, total: int, quiet: bool, forced: bool = False) -> None:
        self.total = total
        self.forced = forced
        self.enabled = not quiet and (forced or sys.stderr.isatty())
        self.plain = self.enabled and not sys.stderr.isatty()
        self._bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        if self.plain:
            self._done, self._every = 0, max(1, self.total // LINES)
            return self.line
        from rich.console import Console

        # Forced (a notebook): the last frame stays, so the cell shows how training went.
        self._bar = make_progress(Console(stderr=True), transient=not self.forced)
        self._bar.start()
        self._task = self._bar.add_task("train", total=self.total, terms="", stage="")
        self._done = 0
        return self.update

    def line(self, stats: EpochStats) -> None:
        """``epoch 3/30 loss 0.2 val 0.21``, every few epochs and at the last."""
        self._done += 1
        if self._done % self._every and self._done != self.total:
            return
        width = len(str(self.total))
        stage = short_stage(stats.stage)
        sys.stderr.write(f"{stage}epoch {self._done:>{width}}/{self.total} {epoch_terms(stats)}\n")
        sys.stderr.flush()

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


def epochs_text(summary: dict[str, Any]) -> str:
    """How many epochs a model trained: --layerwise counts its stages' epochs too."""
    epochs = f"{summary.get('epochs', '?')} epochs"
    stages = (summary.get("layerwise") or {}).get("stages") or []
    if not stages or "stopped_in" in summary["layerwise"]:
        return epochs
    done = sum(int(stage["epochs"]) for stage in stages)
    return f"{done} epochs in {len(stages)} layer-wise stages, then {epochs} of the whole stack"


def training_summary(
    fitted: FittedModel, seconds: float, output: str, auto_latent: bool = False
) -> str:
    """The line ``train`` ends with: what was trained, on what, how fast, how well, where."""
    s = fitted.summary
    terms = ", ".join(f"{k} {v:.4g}" for k, v in s["final"].items())
    val = f", val loss {s['val_loss']:.4g}" if s["val_loss"] is not None else ""
    where = {"-": "stdout", "": ""}.get(output, output)
    ran_on = s["device"] + (
        ", bf16 asked: every layer ran in fp32" if s.get("bf16_in_fp32") else ""
    )
    if s.get("world_size", 1) > 1:
        ran_on += f", {s['world_size']} processes, {s['backend']}"
    return (
        f"trained {fitted.config.kind} {fitted.config.architecture()}"
        + (f" (auto --latent {fitted.config.latent})" if auto_latent else "")
        + f" on {s['rows']} rows "
        f"for {epochs_text(s)} in {seconds:.1f} s ({ran_on}): {terms}{val}"
        + (f" -> {where}" if where else "")
    )
