"""The progress bar's layout: 80 columns, each loss term once."""

from __future__ import annotations


def test_the_bar_fits_80_columns_and_says_each_term_once() -> None:
    """Issue 30 item 4: 'epoch  28/1… ━╸━━━━ 0:00:… loss …', and loss and reconstruction twice."""
    import io

    from rich.console import Console

    from aecli.training import EpochStats, epoch_terms, short_stage
    from aecli.training._progressbar import make_progress

    stats = EpochStats(28, 100, {"loss": 0.012345, "reconstruction": 0.012345}, 0.0145, 0.1)
    assert epoch_terms(stats) == "loss 0.01235 val 0.0145"
    vae = EpochStats(3, 100, {"loss": 25.1, "reconstruction": 22.4, "latent": 2.7}, 25.9, 0.1)
    assert epoch_terms(vae) == "loss 25.1 recon 22.4 latent 2.7 val 25.9"
    for terms, stage in ((epoch_terms(stats), ""), (epoch_terms(vae), "layer 2 of 3: 64-32-64")):
        out = io.StringIO()
        progress = make_progress(Console(file=out, width=80, color_system=None), transient=False)
        task = progress.add_task("train", total=100, terms=terms, stage=short_stage(stage))
        progress.update(task, completed=28)
        progress.console.print(progress.get_renderable())
        line = out.getvalue().rstrip("\n")
        assert len(line) <= 80 and " 28/100 " in line, line  # the counts are never cut
        assert line.startswith(f"{short_stage(stage)}epoch  28/100 ")
        assert (terms in line) == (not stage), line  # only the terms give way, at the end
