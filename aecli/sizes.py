"""Sizes as users write them: ``--hidden``, ``--channels`` and image shapes (torch-free)."""

from __future__ import annotations

from collections.abc import Sequence

from aecli.errors import UsageError


def parse_hidden(text: str | None) -> tuple[int, ...] | None:
    """Parse ``--hidden``: ``300,150``, ``none`` (no hidden layer) or ``auto``/None."""
    if text is None or text.strip().lower() in ("", "auto"):
        return None
    if text.strip().lower() == "none":
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(
            f"expected comma-separated layer sizes such as 300,150, or 'none', got {text!r}",
            flag="--hidden",
        ) from None
    if any(size < 1 for size in sizes):
        raise UsageError(f"layer sizes must be positive, got {text!r}", flag="--hidden")
    return sizes


DEFAULT_CHANNELS = (32, 64)  # --arch conv: two stride-2 convolutions, as for Fashion-MNIST


def parse_channels(text: str) -> tuple[int, ...]:
    """Parse ``--channels``: comma-separated positive channel counts such as ``32,64``."""
    try:
        channels = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(
            f"expected comma-separated channel counts such as 32,64, got {text!r}",
            flag="--channels",
        ) from None
    if not channels or any(c < 1 for c in channels):
        raise UsageError(f"channel counts must be positive, got {text!r}", flag="--channels")
    return channels


def image_of(row_shape: Sequence[int]) -> tuple[int, ...]:
    """(channels, height, width) of image rows: H x W is one channel; () when not images."""
    if len(row_shape) == 2:
        return (1, int(row_shape[0]), int(row_shape[1]))
    if len(row_shape) == 3:
        return tuple(int(s) for s in row_shape)
    return ()
