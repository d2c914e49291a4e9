"""Save and load a model file: one ``.safetensors`` that rebuilds everything.

Layout: tensors ``model.*`` (the state dict) and ``scaler.offset`` /
``scaler.scale``; metadata (``str -> str``) holds JSON under namespaced keys:

- ``aecli.format``: the file format version (an integer as text)
- ``aecli.version``: the aecli that wrote it
- ``aecli.model``: the ModelConfig, ``aecli.train``: the TrainConfig
- ``aecli.data``: column names, the shape of one input row, the scaling
- ``aecli.summary``: the training summary (rows, epochs, final losses)
- ``aecli.optim``: Adam's step count; its moments are tensors ``optim.*``,
  so ``aecli train --resume`` can continue exactly where training stopped; with the
  weights' moving average over the ``averaged`` epochs so far (``optim.*.average``) or,
  once the run finished and the model is that average, the last step's weights
  (``optim.*.last``)

Tensors ``pca.mean`` / ``pca.components`` hold PCA of the same code size fitted
on the training rows (``evaluate --baseline pca``); ``codes.*``, ``residual.*``,
``neighbours.reference``, ``density.*`` and ``terms.*`` the anomaly score's statistics;
``scores.error`` / ``scores.neg_elbo`` the 0.1%-step percentiles of the training rows'
anomaly scores (``score --contamination``).

Nothing is pickled. The header is parsed here, before safetensors sees the
bytes, so that damaged or foreign files get a precise message; reading the
metadata alone needs neither torch nor numpy (``aecli info`` stays fast).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aecli import __version__
from aecli import modelchecks as checks
from aecli.config import FORMAT_VERSION, ModelConfig, TrainConfig
from aecli.errors import AecliError, ModelFileError
from aecli.modelchecks import term_tensors
from aecli.tensorbytes import serialize

if TYPE_CHECKING:
    from aecli.fitted import FittedModel

_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


def read_header(path: str) -> tuple[dict[str, str], dict[str, Any], int]:
    """Validate the file's framing; return (aecli metadata, tensor table, header size).

    Reads the length and the JSON header only, not the tensors (F30: ``info`` on a
    large model read every byte); the tensors' extent is checked against the file size.
    """
    if path == _STDIO:
        head = _read(path)
        total = len(head)
    else:
        with _reading(path), open(path, "rb") as handle:
            total = os.fstat(handle.fileno()).st_size
            head = handle.read(8)
            if len(head) == 8:
                (size,) = struct.unpack("<Q", head)
                head += handle.read(min(size, _MAX_HEADER))
    header, size = _parse_header(head, path, total)
    return header.pop("__metadata__", None) or {}, header, size


def read_header_bytes(
    data: bytes, path: str = "<bytes>"
) -> tuple[dict[str, str], dict[str, Any], int]:
    """``read_header`` for a file already in memory."""
    header, size = _parse_header(data, path)
    return header.pop("__metadata__", None) or {}, header, size


def read_metadata(path: str) -> dict[str, Any]:
    """The decoded aecli metadata of a model file, checked for format and version."""
    metadata, _, _ = read_header(path)
    return _decode_metadata(metadata, path)


def read_described(path: str) -> tuple[dict[str, Any], ModelConfig]:
    """The metadata and model config of a file, checked as ``load`` checks them (no tensors).

    For ``aecli info``, which must refuse what every other command refuses (F3-9).
    """
    meta = read_metadata(path)
    try:
        config = ModelConfig.from_dict(meta["aecli.model"])
        TrainConfig.from_dict(meta["aecli.train"]).validate()
        _, row_shape = checks.data_layout(meta["aecli.data"], config.n_inputs)
        checks.conv_image(config.image, config.arch, row_shape)
    except (AecliError, KeyError, TypeError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ModelFileError(f"{path}: inconsistent aecli model file ({detail})") from None
    return meta, config


_STDIO = "-"
_STDIN: dict[int, tuple[Any, bytes]] = {}  # a model read from stdin, kept: it is read once


def _read(path: str) -> bytes:
    """A model file's bytes; ``-`` is stdin (``aecli train -o - | aecli encode - DATA``)."""
    if path == _STDIO:
        stream = sys.stdin.buffer
        kept = _STDIN.get(0)
        if kept is None or kept[0] is not stream:  # another stdin (a test's) is read anew
            with _reading("<stdin>"):
                _STDIN[0] = (stream, stream.read())
        return _STDIN[0][1]
    with _reading(path):
        return Path(path).read_bytes()


@contextlib.contextmanager
def _reading(path: str) -> Iterator[None]:
    """A model file that cannot be read is a ModelFileError naming it."""
    try:
        yield
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a directory, not a model file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror})") from None


def _parse_header(data: bytes, path: str, total: int | None = None) -> tuple[dict[str, Any], int]:
    """The header of a file whose first bytes are ``data`` and whose length is ``total``."""
    foreign = f"{path}: not a safetensors model file"
    total = len(data) if total is None else total
    if total < 8 or len(data) < 8:
        raise ModelFileError(f"{foreign} (only {total} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(_MAX_HEADER, total - 8) or len(data) < 8 + size:
        raise ModelFileError(f"{foreign} (bad header length; truncated?)")
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFileError(f"{foreign} (header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{foreign} (header is not a JSON object)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise ModelFileError(f"{foreign} (bad entry for tensor {name!r})") from None
    body = total - 8 - size
    if end > body:
        raise ModelFileError(f"{path}: truncated model file ({body} of {end} data bytes)")
    if end < body:
        raise ModelFileError(f"{path}: {body - end} unexpected bytes after the tensors (damaged?)")
    return header, size


def _decode_metadata(metadata: dict[str, str], path: str) -> dict[str, Any]:
    if "aecli.format" not in metadata:
        raise ModelFileError(f"{path}: a safetensors file, but not one written by aecli")
    try:
        version = int(metadata["aecli.format"])
    except (ValueError, TypeError):
        raise ModelFileError(
            f"{path}: bad aecli format version {metadata['aecli.format']!r}"
        ) from None
    if version > FORMAT_VERSION or version < 1:
        raise ModelFileError(
            f"{path}: aecli model format {version} is not supported by aecli {__version__} "
            f"(it reads format 1..{FORMAT_VERSION}); upgrade aecli"
        )
    try:
        decoded = {
            key: json.loads(value) for key, value in metadata.items() if key != "aecli.format"
        }
    except json.JSONDecodeError:
        raise ModelFileError(f"{path}: damaged aecli metadata (not JSON)") from None
    decoded["format"] = version
    required = ("aecli.model", "aecli.train", "aecli.data")
    missing = [key for key in required if key not in decoded]
    if missing:
        raise ModelFileError(f"{path}: aecli metadata lacks {', '.join(missing)}")
    try:
        checks.fields(decoded)
    except (AecliError, ValueError, TypeError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ModelFileError(f"{path}: damaged model file: {detail}") from None
    return decoded


def to_bytes(fitted: FittedModel) -> bytes:
    """Serialise deterministically: same weights and config give the same bytes."""
    import numpy as np

    tensors = {
        f"model.{name}": tensor.detach().to("cpu").numpy()
        for name, tensor in fitted.model.state_dict().items()
    }
    tensors["scaler.offset"] = fitted.scaler.offset
    tensors["scaler.scale"] = fitted.scaler.scale
    extra: dict[str, str] = {}
    if fitted.pca is not None:
        tensors["pca.mean"] = fitted.pca.mean
        tensors["pca.components"] = fitted.pca.components
    for name, values in fitted.score_quantiles.items():
        tensors[f"scores.{name}"] = values
    if fitted.code_stats is not None:
        stats = fitted.code_stats
        tensors["codes.mean"] = stats.mean
        tensors["codes.precision"] = stats.precision
        tensors["codes.norms"] = np.array([stats.error_norm, stats.distance_norm])
        if stats.residual_mean is not None and stats.residual_precision is not None:
            tensors["residual.mean"] = stats.residual_mean
            tensors["residual.precision"] = stats.residual_precision
        if stats.reference is not None and stats.grids is not None:
            tensors["neighbours.reference"] = stats.reference
            if stats.units is not None:
                tensors["neighbours.offset"] = stats.units.offset
                tensors["neighbours.scale"] = stats.units.scale
            if stats.reach is not None:
                tensors["neighbours.reach"] = stats.reach
            if stats.samples is not None:
                tensors["neighbours.samples"] = stats.samples  # float32 holds them exactly
            if stats.density is not None:
                tensors.update(term_tensors("density", stats.density))
            if stats.discrete is not None:
                tensors.update(term_tensors("discrete", stats.discrete))
            if stats.marginal is not None:
                tensors.update(term_tensors("marginal", stats.marginal))
            if stats.mixture is not None:
                parts = vars(stats.mixture).items()
                tensors.update({f"mixture.{k}": v for k, v in parts if v is not None})
            tensors.update({f"terms.{name}": grid for name, grid in stats.grids.items()})
            tensors.update({f"floor.{name}": [floor] for name, floor in stats.floors.items()})
            tensors.update({f"lower.{name}": [share] for name, share in stats.lowers.items()})
            tensors.update({f"span.{name}": [span] for name, span in stats.spans.items()})
            tensors.update({f"power.{name}": [p] for name, p in stats.powers.items()})
    if fitted.optimizer_state is not None:
        for name, tensor in fitted.optimizer_state.moments.items():
            tensors[f"optim.{name}"] = tensor.detach().to("cpu").numpy()
        state = fitted.optimizer_state
        optim = {"step": state.step}
        if state.averaged:
            optim["averaged"] = state.averaged
        extra["aecli.optim"] = _json(optim)
    data = {
        "columns": fitted.columns,
        "row_shape": list(fitted.row_shape),
        "scale": fitted.scaler.method,
    }
    if fitted.scaler.clip is not None:
        data["scale_clip"] = fitted.scaler.clip
    if fitted.scaler.reason:
        data["scale_reason"] = fitted.scaler.reason
    if fitted.pca is not None and fitted.pca.scaled:
        data["pca_scaled"] = True
    if fitted.id_column is not None:
        data["id_column"] = fitted.id_column
    metadata = {
        "aecli.format": str(FORMAT_VERSION),
        "aecli.version": json.dumps(__version__),
        "aecli.model": _json(fitted.config.to_dict()),
        "aecli.train": _json(fitted.train_config.to_dict()),
        "aecli.data": _json(data),
        "aecli.summary": _json(fitted.summary),
        **extra,
    }
    return serialize({k: np.asarray(v, dtype=_dtype(k, v)) for k, v in tensors.items()}, metadata)


def _dtype(name: str, values: Any) -> Any:
    """float32 for every tensor but a reference that ``neighbours.stored_half`` keeps in
    float16 (its values rounded so at training, so the cast loses nothing)."""
    import numpy as np

    from aecli.neighbours import stored_half

    half = name == "neighbours.reference" and stored_half(np.asarray(values))
    return np.float16 if half else np.float32


def save(fitted: FittedModel, path: str, *, protect: Sequence[str] = ()) -> None:
    """Write the model file atomically; inputs named in ``protect`` are never overwritten.

    The bytes are read back with ``load``'s own checks before the rename: a model that
    ``load`` would refuse (non-finite weights, Adam moments or statistics) is never
    written, and whatever was at ``path`` stays (findings4 #1).
    """
    from aecli.io import write_bytes_atomic

    data = verified_bytes(fitted, path)
    write_bytes_atomic(path, data, protect=protect, flag="-o")


def verified_bytes(fitted: FittedModel, path: str) -> bytes:
    """``to_bytes``, refused with a ModelFileError when ``load`` would refuse the result."""
    data = to_bytes(fitted)
    try:
        from_bytes(data, path)
    except ModelFileError as exc:
        detail = str(exc).removeprefix(f"{path}: ")
        raise ModelFileError(
            f"{path}: not written, as no command could load it: {detail}"
        ) from None
    return data


def load(path: str) -> FittedModel:
    """Rebuild a trained model on the CPU from its file alone."""
    return from_bytes(_read(path), path)


def from_bytes(raw: bytes, path: str) -> FittedModel:
    """Rebuild a trained model on the CPU from a model file's bytes (``path`` names it)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    from aecli.fitted import FittedModel
    from aecli.models import build_model
    from aecli.pca import PCA
    from aecli.scaler import Scaler

    header, _ = _parse_header(raw, path)
    meta = _decode_metadata(header.get("__metadata__") or {}, path)
    try:
        tensors = load_tensors(raw)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ModelFileError(f"{path}: damaged tensors ({detail})") from None
    try:
        checks.check_values(tensors)
        config = ModelConfig.from_dict(meta["aecli.model"])
        config.validate()
        train_config = TrainConfig.from_dict(meta["aecli.train"])
        train_config.validate()
        data = meta["aecli.data"]
        # Built without memory, then given the file's tensors: a damaged config
        # claiming huge layers fails on the shape check instead of allocating.
        with torch.device("meta"):
            model = build_model(config)
        state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        model.load_state_dict(state, strict=True, assign=True)
        scaler = Scaler(
            checks.scale_method(data["scale"]),
            tensors["scaler.offset"].numpy(),
            tensors["scaler.scale"].numpy(),
            checks.scale_clip(data.get("scale_clip")),
            str(data.get("scale_reason", "")),
        )
        if scaler.offset.shape != (config.n_inputs,) or scaler.scale.shape != (config.n_inputs,):
            raise ValueError("scaler does not match the input width")
        columns, row_shape = checks.data_layout(data, config.n_inputs)
        checks.conv_image(config.image, config.arch, row_shape)
        pca = None
        if "pca.mean" in tensors:
            mean = tensors["pca.mean"].double().numpy()
            components = tensors["pca.components"].double().numpy()
            if mean.shape != (config.n_inputs,) or components.shape[1:] != (config.n_inputs,):
                raise ValueError("PCA baseline does not match the input width")
            pca = PCA(mean, components, scaled=data.get("pca_scaled") is True)
        quantiles = {
            k.removeprefix("scores."): v.numpy()
            for k, v in tensors.items()
            if k.startswith("scores.")
        }
        stats = checks.code_stats(tensors, config.latent, config.n_inputs)
        optimizer_state = None
        if "aecli.optim" in meta:
            optimizer_state = checks.optimizer_state(meta["aecli.optim"], tensors, model)
    except (AecliError, KeyError, TypeError, ValueError, RuntimeError, OverflowError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ModelFileError(f"{path}: inconsistent aecli model file ({detail})") from None
    model.eval()
    return FittedModel(
        model=model,
        scaler=scaler,
        config=config,
        train_config=train_config,
        columns=columns,
        row_shape=row_shape,
        summary=meta.get("aecli.summary") or {},
        optimizer_state=optimizer_state,
        pca=pca,
        score_quantiles=quantiles,
        code_stats=stats,
        id_column=id_column if isinstance(id_column := data.get("id_column"), str) else None,
    )


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
