"""What a model file's values must satisfy beyond their types: shapes that agree, finite
numbers, percentiles in order (aecli/modelfile.py calls these while it loads)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Summary fields that commands read, and the types they must have.
_SUMMARY_TYPES: dict[str, tuple[type, ...]] = {
    "rows": (int,),
    "val_rows": (int,),
    "epochs": (int, type(None)),
    "kept_epoch": (int,),
    "threads": (int,),
    "world_size": (int,),
    "val_loss": (int, float, type(None)),
    "final": (dict,),
    "stop": (str, type(None)),
    "device": (str,),
    "backend": (str, type(None)),
    "diverged": (bool,),
    "bf16_in_fp32": (bool,),
}


def fields(decoded: dict[str, Any]) -> None:
    """Every field a command reads has its type and a valid value (F17), header-only.

    The configs are rebuilt and validated as training would; the summary's
    fields are typed. ``info`` reads only this, so it reports a damaged file
    as ``encode`` and ``--resume`` do.
    """
    from aecli.config import ModelConfig, TrainConfig

    ModelConfig.from_dict(decoded["aecli.model"]).validate()
    TrainConfig.from_dict(decoded["aecli.train"]).validate()
    if not isinstance(decoded["aecli.data"], dict):
        raise ValueError("aecli.data is not an object")
    summary = decoded.get("aecli.summary", {})
    if not isinstance(summary, dict):
        raise ValueError(f"aecli.summary is {type(summary).__name__}, not an object")
    for key, types in _SUMMARY_TYPES.items():
        if key in summary and type(summary[key]) not in types:
            raise ValueError(f"summary field {key!r} has a bad value {summary[key]!r}")
    if summary.get("kept_epoch", 0) < 0 or (summary.get("epochs") or 0) < 0:
        raise ValueError("summary epochs are negative")
    final = summary.get("final", {})
    if not all(type(v) in (int, float) for v in final.values()):
        raise ValueError("summary field 'final' holds a value that is not a number")


def check_values(tensors: dict[str, Any]) -> None:
    """Finite weights, scaling and statistics, and score percentiles that never decrease.

    Every tensor float32 as aecli writes them, but a wide table's reference rows, which may
    be float16 (format 7): a half-precision weight would fail in the first product.
    """
    import torch

    for name, tensor in tensors.items():
        allowed = (torch.float32, torch.float16) if name == "neighbours.reference" else ()
        if tensor.dtype != torch.float32 and tensor.dtype not in allowed:
            raise ValueError(f"{name} is {str(tensor.dtype).removeprefix('torch.')}, not float32")
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise ValueError(f"{name} holds values that are not finite")
        if name.startswith(("scores.", "terms.")) and bool((tensor.diff() < 0).any()):
            raise ValueError(f"{name}: score percentiles that decrease")
        if name == "scaler.scale" and bool((tensor <= 0).any()):  # found by the fuzzer
            raise ValueError(f"{name}: a column scale that is not positive")


def first_non_finite(fitted: Any) -> str | None:
    """The name (as in the file) of the first tensor of a trained model that is not finite.

    Read off the live model, Adam's moments and the statistics, before any byte is written.
    """
    import numpy as np

    named: list[tuple[str, Any]] = [
        (f"model.{k}", v.detach().cpu().numpy()) for k, v in fitted.model.state_dict().items()
    ]
    if fitted.optimizer_state is not None:
        named += [
            (f"optim.{k}", v.detach().cpu().numpy())
            for k, v in fitted.optimizer_state.moments.items()
        ]
    named += [(f"scores.{k}", v) for k, v in fitted.score_quantiles.items()]
    stats = fitted.code_stats
    if stats is not None:
        named += [("codes.mean", stats.mean), ("codes.precision", stats.precision)]
        named += [("codes.norms", np.array([stats.error_norm, stats.distance_norm]))]
        named += [("residual.mean", stats.residual_mean)]
        named += [("residual.precision", stats.residual_precision)]
        named += [("neighbours.reference", stats.reference), ("neighbours.reach", stats.reach)]
        named += [(f"terms.{k}", v) for k, v in (stats.grids or {}).items()]
        if stats.density is not None:
            named += list(term_tensors("density", stats.density).items())
        for name in ("discrete", "marginal"):
            if getattr(stats, name) is not None:
                named += list(term_tensors(name, getattr(stats, name)).items())
        if stats.mixture is not None:
            named += [(f"mixture.{k}", v) for k, v in vars(stats.mixture).items()]
    for name, values in named:
        # float32 as the file holds them: a float64 statistic beyond 3.4e38 is inf there
        if values is not None and not np.isfinite(np.asarray(values, np.float32)).all():
            return name
    return None


def data_layout(data: dict[str, Any], width: int) -> tuple[list[str] | None, tuple[int, ...]]:
    """Column names and row shape from the metadata, checked against the model's width."""
    import math

    columns = data.get("columns")
    if columns is not None:
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise ValueError("columns are not a list of names (text)")
        if len(columns) != width:
            raise ValueError(f"{len(columns)} column names for the {width} inputs")
    shape = data.get("row_shape") or [width]
    if (
        not isinstance(shape, list)
        or not all(isinstance(s, int) and s > 0 for s in shape)
        or math.prod(shape) != width
    ):
        raise ValueError(f"row shape {shape!r} does not match the {width} inputs")
    return columns, tuple(shape)


def conv_image(image: Any, arch: str, row_shape: tuple[int, ...]) -> None:
    """A conv model's image is its rows' shape (an edit of one alone changed outputs, F3-16)."""
    from aecli.sizes import image_of

    if arch == "conv" and tuple(image) != image_of(row_shape):
        shape = "x".join(map(str, row_shape))
        raise ValueError(f"the convolutions' image {list(image)} is not the row shape {shape}")


def code_stats(tensors: dict[str, Any], latent: int, width: int) -> Any:
    """The anomaly score's statistics, or None in files written before them.

    Files written before the residual terms have ``codes.*`` only; they keep
    the score they were written with.
    """
    import numpy as np

    from aecli.fitted import CodeStats

    if "codes.mean" not in tensors:
        return None
    mean = tensors["codes.mean"].numpy()
    precision = tensors["codes.precision"].numpy()
    norms = tensors["codes.norms"].double().numpy()
    if mean.shape != (latent,) or precision.shape != (latent, latent) or norms.shape != (2,):
        raise ValueError("code statistics do not match the code size")
    stats = CodeStats(mean, precision, float(norms[0]), float(norms[1]))
    if "residual.mean" in tensors or "residual.precision" in tensors:
        stats.residual_mean = tensors["residual.mean"].numpy()
        stats.residual_precision = tensors["residual.precision"].numpy()
        if stats.residual_mean.shape != (width,) or stats.residual_precision.shape not in (
            (width,),
            (width, width),
        ):
            raise ValueError("residual statistics do not match the number of inputs")
    if "neighbours.reference" in tensors:
        stats.reference = tensors["neighbours.reference"].float().numpy()  # float16 too
        names: tuple[str, ...] = ("residual", "code", "neighbour")
        if "neighbours.reach" in tensors:
            stats.reach = tensors["neighbours.reach"].numpy()
            names += ("relative",)
            if stats.reach.shape != stats.reference.shape[:1] or not (stats.reach > 0).all():
                raise ValueError("the neighbour rows' reach does not match them")
        if "neighbours.samples" in tensors:
            if stats.reach is None:
                raise ValueError("a sampled term without the relative term before it")
            stats.samples = samples(tensors["neighbours.samples"], len(stats.reference))
            names += ("sampled",)
        from aecli.density import checked as checked_density

        if "density.axes" in tensors:
            if stats.reach is None:
                raise ValueError("a density term without the relative term before it")
            stats.density = checked_density(term_parts(tensors, "density"), width)
            names += ("density",)
        if "discrete.columns" in tensors:
            if stats.density is None:
                raise ValueError("a discrete term without the density term before it")
            stats.discrete = discrete(tensors, width)
            names += ("discrete",)
        if "marginal.knots" in tensors:  # the density's second view (format 15)
            if stats.density is None:
                raise ValueError("a marginal term without the density term before it")
            stats.marginal = checked_density(term_parts(tensors, "marginal"), width, "marginal")
            names += ("marginal",)
        if "mixture.weights" in tensors:  # the code's second reading (format 12)
            from aecli.mixture import checked

            stats.mixture, names = checked(tensors, latent, width), (*names, "mixture")
        if any(f"terms.{name}" not in tensors for name in names):
            raise ValueError("the score's term percentiles are missing")
        stats.grids = {name: tensors[f"terms.{name}"].numpy() for name in names}
        if stats.reference.ndim != 2 or stats.reference.shape[1] != width:
            raise ValueError("the neighbour rows do not match the number of inputs")
        stats.units = units(tensors, width)
        if any(g.ndim != 1 or len(g) < 101 or (np.diff(g) < 0).any() for g in stats.grids.values()):
            raise ValueError("the score's term percentiles are not ordered")
        stats.floors, stats.lowers = floors(tensors, stats.grids), lowers(tensors, stats.grids)
        spans = (lambda v: 0.0 < v < 1000.0, "(0, 1000)")  # tails.span; format 14
        stats.spans = per_term(tensors, stats.grids, "span", "a tail span", spans)
        powers = (lambda v: 1.0 <= v <= 4.0, "[1, 4]")  # tails.POWER; format 16
        stats.powers = per_term(tensors, stats.grids, "power", "a power", powers)
    elif any(name.startswith(("floor.", "lower.", "span.", "power.")) for name in tensors):
        raise ValueError(
            "floors, lower tails, spans or powers for a score without its terms' percentiles"
        )
    arrays = [mean, precision, stats.residual_mean, stats.residual_precision]
    arrays += [stats.reference, stats.reach, *(stats.grids or {}).values()]
    finite = all(a is None or np.isfinite(a).all() for a in arrays)
    if not (finite and (norms > 0).all()):
        raise ValueError("code statistics are not finite and positive")
    return stats


def samples(tensor: Any, rows: int) -> Any:
    """The sampled term's samples (``neighbours.samples``): int64 [samples, size], each of
    ``size`` distinct reference rows (of ``rows``), as aecli/sampled.py draws them."""
    import numpy as np

    values = tensor.double().numpy()
    if values.ndim != 2 or 0 in values.shape or values.shape[1] > max(rows - 1, 1):
        raise ValueError("the sampled term's samples do not match the neighbour rows")
    if not (np.isfinite(values).all() and (values == np.round(values)).all()):
        raise ValueError("the sampled term's samples are not row numbers")
    if (values < 0).any() or (values >= rows).any():  # before the cast: 1e30 has no int64
        raise ValueError("the sampled term's samples are not distinct neighbour rows")
    index = values.astype(np.int64)
    if (np.diff(index, axis=1) <= 0).any():
        raise ValueError("the sampled term's samples are not distinct neighbour rows")
    return index


def floors(tensors: dict[str, Any], grids: dict[str, Any]) -> dict[str, float]:
    """Where each term starts to count (``floor.*``, format 8): one number in [0, 7), the
    range of a tail within the training rows, for a term the score has."""
    return per_term(tensors, grids, "floor", "a floor", (lambda v: 0.0 <= v < 7.0, "[0, 7)"))


def lowers(tensors: dict[str, Any], grids: dict[str, Any]) -> dict[str, float]:
    """The terms whose lower tail counts too (``lower.*``, format 9), at a share of their
    weight: one number in (0, 1], for a term the score has."""
    return per_term(tensors, grids, "lower", "a lower tail", (lambda v: 0.0 < v <= 1.0, "(0, 1]"))


def per_term(
    tensors: dict[str, Any],
    grids: dict[str, Any],
    prefix: str,
    what: str,
    allowed: tuple[Callable[[float], bool], str],
) -> dict[str, float]:
    """The ``PREFIX.TERM`` numbers of a file: one each, for a term the score has, in the
    range ``allowed`` checks (and names)."""
    inside, span = allowed
    found = {
        name.removeprefix(f"{prefix}."): t
        for name, t in tensors.items()
        if name.startswith(f"{prefix}.")
    }
    for name, value in found.items():
        if name not in grids:
            raise ValueError(f"{what} for {name!r}, a term the score does not have")
        if tuple(value.shape) != (1,) or not inside(float(value[0])):
            raise ValueError(f"{prefix}.{name} is not one number in {span}")
    return {name: float(value[0]) for name, value in found.items()}


def units(tensors: dict[str, Any], width: int) -> Any:
    """The distances' own units (``neighbours.offset`` and ``.scale``), or None without them."""
    import numpy as np

    from aecli.config import Scale
    from aecli.scaler import ROBUST_CLIP, Scaler

    names = ("neighbours.offset", "neighbours.scale")
    if not any(name in tensors for name in names):
        return None
    if not all(name in tensors for name in names):
        raise ValueError("the neighbour rows' units are incomplete")
    offset, scale = (tensors[name].numpy() for name in names)
    if offset.shape != (width,) or scale.shape != (width,):
        raise ValueError("the neighbour rows' units do not match the number of inputs")
    if not (np.isfinite(offset).all() and np.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError("the neighbour rows' units are not finite and positive")
    return Scaler(Scale.robust, offset, scale, ROBUST_CLIP)


# The histogram terms' arrays, as the file names them: density.mean, ..., discrete.counts.
TERM_PARTS = {
    "density": ("mean", "axes", "low", "step", "knots"),
    "discrete": ("columns", "levels", "counts"),
    "marginal": ("low", "step", "knots"),  # the columns' own: no mean, no axes
}


def term_tensors(name: str, term: Any) -> dict[str, Any]:
    """A histogram term's arrays (``name``: density or discrete) by their names in the file,
    and the discrete term's saturation where it has one (format 11)."""
    import numpy as np

    tensors = {f"{name}.{part}": getattr(term, part) for part in TERM_PARTS[name]}
    if getattr(term, "saturation", 0.0) > 0:
        tensors[f"{name}.saturation"] = np.array([term.saturation], dtype=np.float32)
    return tensors


def term_parts(tensors: dict[str, Any], name: str) -> dict[str, Any]:
    """A histogram term's arrays by their part names, all of them or a one-line error."""
    if any(f"{name}.{part}" not in tensors for part in TERM_PARTS[name]):
        raise ValueError(f"the {name} term's tensors are incomplete")
    return {part: tensors[f"{name}.{part}"].numpy() for part in TERM_PARTS[name]}


def discrete(tensors: dict[str, Any], width: int) -> Any:
    """The discrete columns, their values and counts, checked against the input width."""
    import numpy as np

    from aecli.discrete import LEVELS, Discrete

    parts = term_parts(tensors, "discrete")
    columns, levels, counts = parts["columns"], parts["levels"], parts["counts"]
    shaped = columns.ndim == 1 and levels.shape == counts.shape == (len(columns), LEVELS)
    if not (shaped and 0 < len(columns) <= width and (columns == np.round(columns)).all()):
        raise ValueError("the discrete term does not match the number of inputs")
    rows = counts.sum(1) if np.isfinite(counts).all() else np.full(len(columns), np.nan)
    if not (
        (np.diff(columns) > 0).all() and columns[0] >= 0 and columns[-1] < width
        and np.isfinite(levels).all() and (np.diff(levels, axis=1) >= 0).all()
        and (counts >= 0).all() and (counts[:, 0] > 0).all() and (rows == rows[0]).all()
    ):  # fmt: skip
        raise ValueError("the discrete term's columns, values or counts are damaged")
    return Discrete(columns.astype(np.int64), levels, counts, saturation(tensors))


def saturation(tensors: dict[str, Any]) -> float:
    """The discrete term's saturation (format 11): one share in (0, 1); 0 where a file
    before it has none, which counts each value's -log share whole."""
    if "discrete.saturation" not in tensors:
        return 0.0
    value = tensors["discrete.saturation"].numpy()
    if value.shape != (1,) or not 0.0 < float(value[0]) < 1.0:  # NaN fails both
        raise ValueError("the discrete term's saturation is not one share in (0, 1)")
    return float(value[0])


def scale_method(method: Any) -> str:
    from aecli.config import Scale

    fitted_methods = {str(s) for s in Scale} - {str(Scale.auto)}
    if method not in fitted_methods:
        raise ValueError(f"unknown scaling {method!r}")
    return method


def scale_clip(clip: Any) -> float | None:
    """None (files before clipping existed, and unclipped methods) or a positive number."""
    import math

    if clip is None:
        return None
    if type(clip) not in (int, float) or not math.isfinite(clip) or clip <= 0:
        raise ValueError(f"bad scale_clip {clip!r}")
    return float(clip)


def optimizer_state(optim: Any, tensors: dict[str, Any], model: Any) -> Any:
    """What ``--resume`` continues from: Adam's moments, and the weights' running mean."""
    moments = {k.removeprefix("optim."): v for k, v in tensors.items() if k.startswith("optim.")}
    counts = (optim["step"], optim.get("averaged", 0))
    if any(type(n) is not int or n < 0 for n in counts):
        raise ValueError(f"bad optimizer step counts {counts!r}")
    finished = any(name.endswith(".last") for name in moments)  # the model is the average
    averaged = (("last",) if finished else ("average",)) if counts[1] else ()
    for name, param in model.named_parameters():
        for moment in ("exp_avg", "exp_avg_sq", *averaged):
            saved = moments.get(f"{name}.{moment}")
            if saved is None or saved.shape != param.shape:
                raise ValueError(f"optimizer state for {name} is missing or misshapen")
    from aecli.fitted import OptimizerState

    return OptimizerState(counts[0], moments, counts[1])
