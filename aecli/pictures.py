"""Pictures: image grids of rows and weights, and training curves, as PNG files.

matplotlib is optional (``pip install '.[plot]' -c constraints.txt``): it is imported only
here, only when a picture is asked for, with the non-interactive Agg backend.
Every PNG is rendered in memory and written atomically like any output.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from aecli.errors import UsageError
from aecli.io import write_bytes_atomic

MIN_TILE_PIXELS = 56  # small images (8x8 digits) are enlarged to at least this


def _matplotlib(flag: str) -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UsageError(
            "pictures need matplotlib, an optional extra: pip install '.[plot]' -c constraints.txt",
            flag=flag,
        ) from None
    matplotlib.use("Agg")
    return matplotlib


def parse_image_shape(text: str) -> tuple[int, ...]:
    """``HxW`` or ``CxHxW`` (also with commas) to a tuple of positive ints."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3):
        raise UsageError(
            f"expected HxW such as 28x28, or CxHxW such as 3x32x32, got {text!r}",
            flag="--image-shape",
        )
    if min(shape) < 1:
        raise UsageError(f"sizes must be positive, got {text!r}", flag="--image-shape")
    return shape


def image_shape(row_shape: Sequence[int], n_values: int, given: str | None) -> tuple[int, int]:
    """The (height, width) rows are drawn with: --image-shape, else the data's own shape.

    A C x H x W image is drawn as its C channels one above the other (C*H x W).
    """
    if given is not None:
        shape = parse_image_shape(given)
        if math.prod(shape) != n_values:
            text = "x".join(str(s) for s in shape)
            raise UsageError(
                f"{text} = {math.prod(shape)} pixels, but rows have {n_values} values",
                flag="--image-shape",
            )
        return math.prod(shape[:-1]), shape[-1]
    if len(row_shape) in (2, 3):
        return math.prod(int(s) for s in row_shape[:-1]), int(row_shape[-1])
    side = math.isqrt(n_values)
    hint = f" (e.g. --image-shape {side}x{side})" if side * side == n_values else ""
    raise UsageError(
        f"rows of {n_values} values have no image shape; give --image-shape HxW{hint}",
        flag="--image-shape",
    )


def mosaic(images: np.ndarray, columns: int, *, blank: float = np.nan) -> np.ndarray:
    """Tile N x H x W images into one array, ``columns`` per row, 1-pixel gaps."""
    n, height, width = images.shape
    rows = max(1, math.ceil(n / columns))
    out = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1), blank, dtype=np.float64)
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        out[
            r * (height + 1) : r * (height + 1) + height, c * (width + 1) : c * (width + 1) + width
        ] = image
    return out


def save_grid(
    path: str,
    images: np.ndarray,
    columns: int,
    *,
    diverging: bool = False,
    protect: Sequence[str] = (),
    row_labels: Sequence[str] = (),
) -> None:
    """Write images as one PNG: dark strokes on white, or red/blue around 0 for weights.

    ``row_labels``: a label for each row of tiles, cycled (``original``, ``reconstruction``),
    written in a margin on the left.
    """
    matplotlib = _matplotlib("--grid")
    from matplotlib import image as mpimg

    _check_png(path)
    images = np.asarray(images, dtype=np.float64)
    if diverging:
        # Each weight image on its own symmetric scale, as the book draws them.
        peak = np.abs(images).reshape(len(images), -1).max(1)
        images = images / np.where(peak > 0, peak, 1.0)[:, None, None]
        vmin, vmax, cmap = -1.0, 1.0, "RdBu_r"
    else:
        finite = images[np.isfinite(images)]
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        vmax = vmax if vmax > vmin else vmin + 1.0
        cmap = "binary"
    grid = mosaic(images, columns)
    factor = max(1, math.ceil(MIN_TILE_PIXELS / max(images.shape[1], 1)))
    grid = np.kron(grid, np.ones((factor, factor)))
    colours = matplotlib.colormaps[cmap](np.clip((grid - vmin) / (vmax - vmin), 0, 1))
    colours[np.isnan(grid)] = (1.0, 1.0, 1.0, 1.0)  # gaps and empty tiles
    buffer = io.BytesIO()
    if row_labels:
        _labelled(buffer, colours, row_labels, (images.shape[1] + 1) * factor)
    else:
        mpimg.imsave(buffer, colours, format="png")
    write_bytes_atomic(path, buffer.getvalue(), protect=protect, flag="--grid")


def _labelled(buffer: io.BytesIO, colours: np.ndarray, labels: Sequence[str], band: int) -> None:
    """The grid at one pixel a pixel, with each band of tiles labelled in a left margin."""
    from matplotlib.figure import Figure

    height, width = colours.shape[:2]
    margin, dpi = 110, 100
    figure = Figure(figsize=((width + margin) / dpi, height / dpi), dpi=dpi)
    axes = figure.add_axes((margin / (width + margin), 0, width / (width + margin), 1))
    axes.imshow(colours, interpolation="nearest")
    axes.set_axis_off()
    for row in range(math.ceil((height + 1) / band)):
        label = labels[row % len(labels)]
        axes.text(-6, row * band + band / 2 - 1, label, ha="right", va="center", fontsize=8)
    figure.savefig(buffer, format="png", dpi=dpi)


def pairs(originals: np.ndarray, reconstructions: np.ndarray, per_row: int = 10) -> np.ndarray:
    """Bands of ``per_row`` originals above their reconstructions (NaN tiles fill gaps)."""
    n = len(originals)
    bands = []
    for start in range(0, n, per_row):
        for block in (originals, reconstructions):
            part = block[start : start + per_row]
            if len(part) < per_row:
                filler = np.full((per_row - len(part), *part.shape[1:]), np.nan)
                part = np.concatenate([part, filler])
            bands.append(part)
    return np.concatenate(bands)


def save_curves(path: str, records: list[dict[str, Any]], *, protect: Sequence[str] = ()) -> None:
    """Loss terms and validation loss per epoch, on a log y axis when all are positive."""
    _matplotlib("-o")
    from matplotlib.figure import Figure

    _check_png(path, "-o")
    epochs = [r["epoch"] for r in records]
    series: dict[str, list[float]] = {}
    for record in records:
        for key, value in record.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if key in ("epoch", "seconds") or not number:  # "diverged": true is no curve
                continue
            series.setdefault(key, [])
    for key in series:
        series[key] = [
            float(r.get(key, np.nan)) if r.get(key) is not None else np.nan for r in records
        ]
    if "loss" in series:  # a term that is the loss itself (most kinds) is drawn once
        series = {k: v for k, v in series.items() if k == "loss" or v != series["loss"]}
    figure = Figure(figsize=(7, 4.2), dpi=100)
    axes = figure.add_subplot()
    for key, values in series.items():
        style = "--" if key == "val_loss" else "-"
        axes.plot(epochs, values, style, label=key.replace("_", " "))
    finite = [v for values in series.values() for v in values if np.isfinite(v)]
    if finite and min(finite) > 0:  # losses fall by decades: a log axis shows every one
        axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue(), protect=protect, flag="-o")


def save_scores(
    path: str,
    scores: np.ndarray,
    threshold: float | None,
    top: list[tuple[float, str, np.ndarray]],
    columns: Sequence[str],
    *,
    protect: Sequence[str] = (),
) -> None:
    """What a table user plots of ``score``: the scores' histogram and the top rows' errors.

    Left, the histogram of every row's score (log x when the scores span decades) with the
    threshold, if any. Right, for each of the highest-scoring rows (``top``: score, label,
    per-feature squared errors), its largest per-feature errors as bars: which columns
    make it unusual.
    """
    _matplotlib("--hist")
    from matplotlib.figure import Figure

    _check_png(path, "--hist")
    figure = Figure(figsize=(11, 4.2), dpi=100)
    left, right = figure.subplots(1, 2, width_ratios=[1.2, 1])
    finite = scores[np.isfinite(scores)]
    positive = finite[finite > 0]
    if len(positive) == len(finite) and len(finite) and finite.max() / finite.min() > 100:
        bins = np.geomspace(positive.min(), positive.max(), 60)
        left.set_xscale("log")
    else:
        bins = 60
    left.hist(finite, bins=bins, color="0.45")
    if threshold is not None:
        flagged = int((scores > threshold).sum())
        left.axvline(threshold, color="C3", label=f"threshold {threshold:.4g}: {flagged} flagged")
        left.legend()
    left.set_xlabel("score")
    left.set_ylabel("rows")
    left.set_title(f"{len(scores)} rows")
    shown = min(5, len(columns))
    ticks, names, values = [], [], []
    for rank, (score, label, errors) in enumerate(top):
        order = np.argsort(errors)[::-1][:shown]
        at = rank * (shown + 1) + np.arange(len(order))
        right.barh(at, errors[order], color=f"C{rank}", label=f"{label}: score {score:.4g}")
        ticks += at.tolist()
        names += [str(columns[j]) for j in order]
        values += errors[order].tolist()
    right.set_yticks(ticks, names, fontsize=7)
    right.invert_yaxis()
    bars = [v for v in values if v > 0]
    if bars and max(bars) / min(bars) > 100:
        right.set_xscale("log")
    right.set_xlabel("squared error (scaled units)")
    right.set_title(f"the {len(top)} highest scores: their largest column errors")
    if top:
        right.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue(), protect=protect, flag="--hist")


def check_target(path: str, flag: str) -> None:
    """Fail before any work when a picture could not be written: not .png, no matplotlib."""
    from aecli.io import check_output

    _check_png(path, flag)
    check_output(path, flag)
    _matplotlib(flag)


def _check_png(path: str, flag: str = "--grid") -> None:
    if not path.lower().endswith(".png"):
        raise UsageError(
            f"pictures are written as PNG; name the file .png, not {path!r}", flag=flag
        )
