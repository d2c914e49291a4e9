"""Sizes as users write them: ``--hidden``, ``--channels`` and image shapes (torch-free)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from aecli.errors import UsageError


def parse_hidden(text: str | None) -> tuple[int, ...] | None:
    """Parse ``--hidden``: ``300,150``, ``none`` (no hidden layer) or ``auto``/None."""
    if text is None or text.strip().lower() in ("", "auto"):
        return None
    if text.strip().lower() == "none":
        return ()
    return _positive(
        text, "--hidden", "comma-separated layer sizes such as 300,150, or 'none'", "layer sizes"
    )


DEFAULT_CHANNELS = (32, 64)  # --arch conv: two stride-2 convolutions, as for Fashion-MNIST


def parse_channels(text: str) -> tuple[int, ...]:
    """Parse ``--channels``: comma-separated positive channel counts such as ``32,64``."""
    return _positive(
        text, "--channels", "comma-separated channel counts such as 32,64", "channel counts"
    )


def _positive(text: str, flag: str, expected: str, what: str) -> tuple[int, ...]:
    """Comma-separated whole numbers, each at least 1, or a usage error naming ``flag``."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"expected {expected}, got {text!r}", flag=flag) from None
    if not sizes or any(size < 1 for size in sizes):
        raise UsageError(f"{what} must be positive, got {text!r}", flag=flag)
    return sizes


def image_of(row_shape: Sequence[int]) -> tuple[int, ...]:
    """(channels, height, width) of image rows: H x W is one channel; () when not images."""
    if len(row_shape) == 2:
        return (1, int(row_shape[0]), int(row_shape[1]))
    if len(row_shape) == 3:
        return tuple(int(s) for s in row_shape)
    return ()


def check_image(shape: Sequence[int], width: int) -> None:
    """An image shape must hold a row's values: the one message for ``--image-shape`` and
    for a model file whose image does not match its input width."""
    if math.prod(shape) != width:
        text = "x".join(map(str, shape))
        raise UsageError(
            f"{text} is {math.prod(shape)} values, but rows have {width}", flag="--image-shape"
        )
