"""ONNX export: one graph per part of a model, its scaling inside, for serving without torch.

A deployed encoder or anomaly scorer usually runs where Python and torch are
absent (a Java or C# service, a browser); ONNX is how that world takes models.
Each graph takes rows in the user's original units and gives what the matching
aecli command gives, so the caller never re-implements the scaler or the score.

The graphs come from torch's own exporters: the TorchScript one where torch still has
it (deprecated since 2.9, but 80 times faster to start on these plain graphs), else
``torch.onnx.export(dynamo=True)``, the one torch develops.
Opset 18: the exporter's native opset, and what onnxruntime has run since 1.14
(2023), onnxruntime-web and the Java and C# packages included, so a file runs
on runtimes a few years old. Nothing here prints; the CLI reports.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import warnings
from typing import TYPE_CHECKING, Any

from aecli import __version__
from aecli.errors import UsageError

if TYPE_CHECKING:
    import torch

    from aecli.fitted import FittedModel

OPSET = 18
HALVED_VALUES = 4096  # constants this large are worth a Cast when float16 holds them
MIN_TORCH = (2, 6)  # torch.onnx.export(dynamo=True) with dynamic_shapes and external_data
PARTS = ("encode", "reconstruct", "score", "sample")
EXTRA_HINT = (
    "pip install '.[onnx]' -c constraints.txt (onnx and onnxscript, which torch's exporter needs)"
)

# Input and output names of each part's graph.
SIGNATURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "encode": ("rows", ("codes",)),
    "reconstruct": ("rows", ("reconstruction",)),
    "score": ("rows", ("score", "per_feature")),
    "sample": ("noise", ("rows",)),
}


def check_available() -> None:
    """Fail early, before any work, when the optional extra is missing."""
    missing = []
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise UsageError(f"export needs {' and '.join(missing)}: {EXTRA_HINT}", flag="export")
    import torch

    if tuple(int(p) for p in torch.__version__.split(".")[:2]) < MIN_TORCH:
        raise UsageError(
            f"export needs torch {'.'.join(map(str, MIN_TORCH))} or newer (its ONNX exporter), "
            f"this is {torch.__version__}",
            flag="export",
        )


def check_part(fitted: FittedModel, part: str) -> None:
    from aecli.models import VariationalAutoencoder

    if part not in PARTS:
        raise UsageError(f"must be one of {', '.join(PARTS)}, got {part!r}", flag="--part")
    if part == "sample" and not isinstance(fitted.model, VariationalAutoencoder):
        raise UsageError(
            f"sampling needs a vae, this model is of kind '{fitted.config.kind}'", flag="--part"
        )


def to_onnx(fitted: FittedModel, part: str) -> bytes:
    """The serialised ONNX model of one part, checked by ``onnx.checker``."""
    import onnx
    import torch

    check_part(fitted, part)
    graph = graph_for(fitted, part).eval()
    width = fitted.config.latent if part == "sample" else fitted.config.n_inputs
    example = torch.zeros(2, width)
    input_name, output_names = SIGNATURES[part]
    batch = torch.export.Dim("batch")
    quiet = io.StringIO()
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # "torchvision is not installed" and the like
    try:
        with contextlib.redirect_stdout(quiet), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proto = _traced(graph, example, input_name, output_names)
            if proto is None:
                program = torch.onnx.export(
                    graph,
                    (example,),
                    None,
                    dynamo=True,
                    input_names=[input_name],
                    output_names=list(output_names),
                    opset_version=OPSET,
                    dynamic_shapes=({0: batch},),
                    external_data=False,
                    verbose=False,
                )
                proto = program.model_proto
    finally:
        logger.setLevel(level)
    _halve_exact(proto)
    proto.doc_string = f"aecli {part} of a {fitted.config.kind} autoencoder"
    proto.producer_name, proto.producer_version = "aecli", __version__
    for key, value in metadata(fitted, part).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def _halve_exact(proto: Any) -> None:
    """Keep a float32 constant whose every value is a float16 as float16 behind a Cast.

    The neighbour reference of a wide table is stored in float16 (format 7); the exporter
    folds its Cast into a float32 constant of twice the bytes. Undone here: the same numbers,
    half the file (ONNX Runtime casts it once, at load). Weights are never all float16.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    inputs = {value.name for value in graph.input}
    casts = []
    for constant in graph.initializer:
        if constant.data_type != TensorProto.FLOAT or constant.name in inputs:
            continue
        if math.prod(constant.dims) < HALVED_VALUES:
            continue
        values = numpy_helper.to_array(constant)
        half = values.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), values):
            continue
        name = constant.name
        constant.CopyFrom(numpy_helper.from_array(half, f"{name}_float16"))
        casts.append(helper.make_node("Cast", [f"{name}_float16"], [name], to=TensorProto.FLOAT))
    for cast in reversed(casts):
        graph.node.insert(0, cast)


def _traced(
    graph: torch.nn.Module, example: torch.Tensor, input_name: str, output_names: tuple[str, ...]
) -> Any:
    """The graph from torch's TorchScript exporter, or None where this torch has none.

    Our graphs are plain tensor code, which tracing captures whole; it takes 0.1 s where
    the dynamo exporter's start-up (torch.export, the torchlib registry) takes about 8
    (issue 30). Deprecated since torch 2.9, so a torch without it takes the dynamo path.
    """
    import onnx
    import torch

    buffer = io.BytesIO()
    batch = {name: {0: "batch"} for name in (input_name, *output_names)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice
            torch.onnx.export(
                graph,
                (example,),
                buffer,
                dynamo=False,
                input_names=[input_name],
                output_names=list(output_names),
                opset_version=OPSET,
                dynamic_axes=batch,
            )
    except Exception:  # removed from this torch, or not traceable: the dynamo path decides
        return None
    return onnx.load_from_string(buffer.getvalue())


def metadata(fitted: FittedModel, part: str) -> dict[str, str]:
    """What a server needs beside the graph: names of the values in and out, the config."""
    columns, codes = fitted.column_names, fitted.code_names
    names = {
        "encode": (columns, {"codes": codes}),
        "reconstruct": (columns, {"reconstruction": columns}),
        "score": (columns, {"score": ["score"], "per_feature": columns}),
        "sample": (codes, {"rows": columns}),
    }[part]
    data = {
        "columns": fitted.columns,
        "row_shape": list(fitted.row_shape),
        "scale": fitted.scaler.method,
    }
    return {
        "aecli.version": __version__,
        "aecli.part": part,
        "aecli.input_names": json.dumps(names[0]),
        "aecli.output_names": json.dumps(names[1]),
        "aecli.model": json.dumps(fitted.config.to_dict(), sort_keys=True),
        "aecli.train": json.dumps(fitted.train_config.to_dict(), sort_keys=True),
        "aecli.data": json.dumps(data, sort_keys=True),
    }


def _graph_module() -> type:
    """The torch module class, made on first use so that importing this file needs no torch."""
    import torch

    from aecli.graphterms import (
        as_buffer,
        histogram_terms,
        in_units,
        mixture_term,
        register_neighbours,
    )

    class Graph(torch.nn.Module):
        """One part of a fitted model as a pure function of its input, for the exporter.

        It repeats what ``FittedModel`` and ``diagnostics.row_terms`` do on numpy arrays
        (scaling, the score's float64 terms) with torch operations, so that the exported
        graph gives the same numbers as the commands."""

        def __init__(self, fitted: FittedModel, part: str) -> None:
            super().__init__()
            self.model = fitted.model
            self.part = part
            self.clip = fitted.scaler.clip
            self.register_buffer("offset", as_buffer(fitted.scaler.offset, torch.float32))
            self.register_buffer("spread", as_buffer(fitted.scaler.scale, torch.float32))
            stats = fitted.code_stats
            self.has_stats = stats is not None
            self.has_residual = stats is not None and stats.residual_mean is not None
            if stats is not None:
                self.norms = (stats.error_norm, stats.distance_norm)
                self.register_buffer("code_mean", as_buffer(stats.mean, torch.float64))
                self.register_buffer("code_precision", as_buffer(stats.precision, torch.float64))
            if self.has_residual:
                assert stats is not None
                self.register_buffer("res_mean", as_buffer(stats.residual_mean, torch.float64))
                precision = as_buffer(stats.residual_precision, torch.float64)
                self.register_buffer("res_precision", precision)
            self.has_neighbours = register_neighbours(self, stats)

        def forward(self, x: torch.Tensor) -> Any:
            if self.part == "sample":
                return self.unscale(self.model.output(self.model.decode(x)))
            target = (x - self.offset) / self.spread
            scaled = target if self.clip is None else target.clamp(-self.clip, self.clip)
            codes = self.model.codes(scaled)
            if self.part == "encode":
                return codes
            out = self.model.output(self.model.decode(codes))
            if self.part == "reconstruct":
                return self.unscale(out)
            diff = out - target
            squared = diff * diff
            error = squared.mean(1)
            if not self.has_stats:
                return error, squared
            distance = _mahalanobis(codes, self.code_mean, self.code_precision)
            if self.has_residual:
                first = _mahalanobis(diff, self.res_mean, self.res_precision)
            else:
                first = error.double()
            if self.has_neighbours:
                apart = in_units(self, scaled) if self.has_units else scaled
                near = _neighbour_terms(self, apart)
                terms = {"residual": first, "code": distance, **near}
                terms.update(histogram_terms(self, apart, x))
                if self.has_mixture:
                    terms["mixture"] = mixture_term(self, codes, apart)
                score = sum(self.adds(terms, name) for name in self.weights)
                return score.float(), squared
            score = first / self.norms[0] + distance / self.norms[1]
            return score.float(), squared

        def adds(self, terms: dict[str, torch.Tensor], name: str) -> torch.Tensor:
            """aecli/tails.py's ``parts`` for one term: its tail above its floor (the rarer
            of its readings, where it has two), and its lower tail at its share where it has
            one, to its power, op for op."""
            import torch

            values = terms[name]
            weight, share = self.weights[name], _below(self, values, name)
            upper = _tail(self, values, name, share)
            if name == "code" and self.has_mixture:  # the rarer of its two readings
                upper = torch.maximum(upper, _tail(self, terms["mixture"], "mixture"))
            count = self.counted(upper, name)
            if name in self.lowers:
                least = 1.0 / getattr(self, f"grid_{name}").shape[0]
                lower = (-torch.log(2.0 * share.clamp_min(least))).clamp_min(0.0)
                count = count + self.lowers[name] * lower
            power = self.powers.get(name, 1.0)
            return weight * (count.pow(power) if power != 1.0 else count)

        def counted(self, tails: torch.Tensor, name: str) -> torch.Tensor:
            """aecli/tails.py's ``counted``: the tail above the term's floor."""
            floor = self.floors.get(name, 0.0)
            return (tails - floor).clamp_min(0.0) if floor > 0 else tails

        def unscale(self, values: torch.Tensor) -> torch.Tensor:
            return values * self.spread + self.offset

    return Graph


def _tail(
    graph: torch.nn.Module, values: torch.Tensor, name: str, share: torch.Tensor | None = None
) -> torch.Tensor:
    """aecli/tails.py's ``tail``: -log(1 - F) and the decades past q99, op for op."""
    import torch

    share = _below(graph, values, name) if share is None else share
    q99, decades = getattr(graph, f"knees_{name}")
    beyond = torch.log(values.clamp_min(1e-30) / q99).clamp_min(0.0) / decades
    return -torch.log1p(-share) + beyond


def _below(graph: torch.nn.Module, values: torch.Tensor, name: str) -> torch.Tensor:
    """aecli/tails.py's ``below``: the same clamped ramps, op for op."""
    import torch

    from aecli.tails import TIE_WIDTH

    grid = getattr(graph, f"grid_{name}")
    low = grid[:-1]
    width = torch.maximum(grid[1:] - low, TIE_WIDTH * low.abs().clamp_min(1e-30))
    ramps = ((values[:, None] - low[None, :]) / width[None, :]).clamp(0.0, 1.0)
    return ramps.sum(1) / grid.shape[0]


def _neighbour_terms(graph: torch.nn.Module, scaled: torch.Tensor) -> dict[str, torch.Tensor]:
    """aecli/neighbours.py's terms, as ``diagnostics.row_terms`` computes them, from the
    graph's buffers (aecli/graphterms.py ``register_neighbours``)."""
    reference, ref_norms = graph.reference, graph.reference_norms
    if not graph.has_reach:
        return {"neighbour": _nearest(reference, ref_norms, scaled).double()}
    from aecli.neighbours import neighbour_terms

    samples = graph.samples if graph.has_samples else None
    found = neighbour_terms(
        reference, scaled, graph.reach, samples, graph=True, ref_norms=ref_norms
    )
    return {name: term.double() for name, term in found.items()}


def _nearest(
    reference: torch.Tensor, reference_norms: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """aecli/neighbours.py's ``nearest``, op for op: the nearest reference row but itself."""
    import torch

    from aecli.neighbours import SAME_ROW

    norms = (rows * rows).sum(1, keepdim=True)
    ref_norms = reference_norms[None, :]
    squared = (norms - 2.0 * rows @ reference.T + ref_norms).clamp_min(0.0)
    if reference.shape[0] == 1:
        return squared[:, 0].sqrt()
    values, indices = squared.topk(2, dim=1, largest=False)
    scale = norms[:, 0] + ref_norms[0][indices[:, 0]]
    first, second = values[:, 0], values[:, 1]
    return torch.where(first <= SAME_ROW * scale, second, first).sqrt()


def _mahalanobis(rows: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """As ``aecli.fitted.mahalanobis``, in float64; a 1-d precision is a diagonal one."""
    centred = rows.double() - mean
    if precision.dim() == 1:
        return (centred * centred) @ precision
    return ((centred @ precision) * centred).sum(1)


def graph_for(fitted: FittedModel, part: str) -> torch.nn.Module:
    """The module the exporter traces for one part."""
    return _graph_module()(fitted, part)
