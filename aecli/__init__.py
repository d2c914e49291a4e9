"""aecli: train and use autoencoders from the shell.

Only the version lives here so that ``import aecli`` (and ``aecli --help``)
stays light: torch, numpy and safetensors are imported by the modules that
need them, when a command needs them. ``aecli.Autoencoder``, the Python API,
is imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Autoencoder", "__version__"]


def __getattr__(name: str) -> Any:
    """``from aecli import Autoencoder`` imports scikit-learn and torch only when asked."""
    if name == "Autoencoder":
        try:
            from aecli.estimator import Autoencoder
        except ImportError as exc:
            if exc.name is None or not exc.name.startswith("sklearn"):
                raise
            raise ImportError(
                "aecli.Autoencoder needs scikit-learn: pip install '.[sklearn]' -c constraints.txt"
            ) from exc
        return Autoencoder
    raise AttributeError(f"module 'aecli' has no attribute {name!r}")
