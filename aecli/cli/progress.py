"""How ``train`` ends: what it says, and its exit (the bar and summary: _progressbar.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aecli.training import training_summary

if TYPE_CHECKING:
    from aecli.fitted import FittedModel
    from aecli.training import History


# -- encode / reconstruct / sample -------------------------------------------------


def say_ending(
    fitted: FittedModel,
    history: History,
    output: str,
    target: str,
    main: bool,
    quiet: bool,
    resumable: bool,
    auto_latent: bool = False,
) -> None:
    """How ``train`` ends, once the model is saved to ``target``: what it says and its exit.

    A diverged run exits 1 naming where its last finite epoch went, a signal 128+N with
    the way to continue, a finished run 0 with its summary line. Under torchrun only
    rank 0 (``main``) speaks.
    """
    import typer

    from aecli.cli import signals
    from aecli.cli.app import tell
    from aecli.errors import TrainingError

    where = "stdout" if target == "-" else target
    kept = fitted.summary["kept_epoch"]
    if history.stop == "non-finite":
        if not main:
            raise typer.Exit(TrainingError.exit_code)
        left = f"; {output} was left as it was" if target != output else ""
        raise TrainingError(
            f"{history.message} (the model of epoch {kept} was saved to {where}{left})"
        )
    if history.stop == "interrupted":
        message = history.message.replace("interrupted", signals.word(), 1)
        if main:
            again = f" (continue: --resume {target} -o {target})" if resumable else ""
            tell(f"aecli: {message}; the model of epoch {kept} was saved to {where}{again}")
        raise typer.Exit(signals.exit_code())
    if not quiet:
        if history.stop == "early-stopping":
            tell(f"aecli: {history.message}; kept epoch {kept}")
        tell(training_summary(fitted, history.seconds, output, auto_latent))
    if fitted.summary.get("diverged") and main:  # a warning: said even with --quiet
        tell(f"aecli: warning: {divergence_text(fitted)}")


def divergence_text(fitted: FittedModel) -> str:
    """What a diverged run's warning and ``info`` say, with the flag to change."""
    final = fitted.summary.get("final", {})
    loss = final.get("reconstruction", final.get("loss", float("nan")))
    return (
        f"training diverged: its reconstruction error {loss:.4g} is worse than predicting "
        f"each column's mean; try a smaller --lr (this run: {fitted.train_config.lr:g})"
    )
