"""Commands that measure and describe: evaluate, score, info, export, example, curves."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aecli.cli.app import tell
from aecli.cli.options import (
    AllowNanOpt,
    ColumnsOpt,
    DataArg,
    DelimiterOpt,
    ExcludeOpt,
    FormatOpt,
    HeaderOpt,
    IdColumnOpt,
    IdColumnReadOpt,
    ModelArg,
    OutputOpt,
    StdoutFormat,
)
from aecli.cli.outputs import check_model_output
from aecli.cli.rows import carried_id, model_input
from aecli.errors import UsageError

if TYPE_CHECKING:
    pass


def evaluate(
    model: ModelArg,
    data: DataArg,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (keys: docs/evaluate.md).")
    ] = False,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Also measure a baseline on DATA: pca (same code size, fitted on the "
            "training rows at train time).",
            show_default=False,
        ),
    ] = None,
    columns: ColumnsOpt = None,
    id_column: IdColumnReadOpt = None,
    exclude: ExcludeOpt = None,
    allow_nan: AllowNanOpt = False,
    header: HeaderOpt = None,
    delimiter: DelimiterOpt = None,
) -> None:
    """Measure reconstruction on DATA: mse in original units, bce, a VAE's ELBO, sparsity."""
    from aecli import modelfile
    from aecli.diagnostics import Evaluator

    if baseline not in (None, "pca"):
        raise UsageError(
            f"unknown baseline {baseline!r}; the one baseline is pca", flag="--baseline"
        )
    fitted = modelfile.load(model)
    if baseline == "pca" and fitted.pca is None:
        raise UsageError(
            "this model file has no PCA baseline (it was written by an older aecli or has "
            "more than 4096 inputs)",
            flag="--baseline",
        )
    evaluator = Evaluator(fitted, baseline_pca=baseline == "pca")
    options = (header, delimiter, columns, id_column, allow_nan, exclude)
    with model_input(fitted, data, options) as (_, chunks):
        for chunk in chunks:
            evaluator.update(chunk.values)
    report = evaluator.result()
    if as_json:
        typer.echo(json.dumps(report, sort_keys=True))
        return
    typer.echo(_evaluate_text(report))


def _evaluate_text(report: dict[str, Any]) -> str:
    lines = [f"rows               {report['rows']} ({report['kind']} model)"]
    lines.append(f"mse                {report['mse']:.6g}  (per value, original units)")
    lines.append(f"mse (scaled)       {report['mse_scaled']:.6g}")
    rows = report["row_mse"]
    lines.append(
        "row mse            "
        + ", ".join(f"{k} {rows[k]:.4g}" for k in ("mean", "median", "p90", "p99", "max"))
    )
    if "bce" in report:
        lines.append(f"bce                {report['bce']:.6g}  (nats per value)")
    if "neg_elbo" in report:
        lines.append(
            f"neg ELBO           {report['neg_elbo']:.6g}  (nats per row; KL {report['kl']:.4g})"
        )
    if "active_units" in report:
        lines.append(
            f"active units       {report['active_units']} of {report['latent_units']}  "
            "(posterior mean varies across rows: Var > 0.01)"
        )
    if "mean_activation" in report:
        lines.append(
            f"mean activation    {report['mean_activation']:.4g}  (target "
            f"{report['sparsity_target']:g}; {report['units_near_target']:.0%} of units near it)"
        )
    if "pca_mse_scaled" in report:  # the ratio is taken in the scaled units
        lines.append(f"PCA mse            {report['pca_mse']:.6g}  (original units)")
        lines.append(
            f"PCA mse (scaled)   {report['pca_mse_scaled']:.6g}  "
            f"(model/PCA {report['mse_vs_pca']:.3f}, in the scaled units)"
        )
    elif "pca_mse" in report:
        lines.append(
            f"PCA mse            {report['pca_mse']:.6g}  (model/PCA {report['mse_vs_pca']:.3f})"
        )
    return "\n".join(lines)


def score(
    model: ModelArg,
    data: DataArg,
    output: OutputOpt = "-",
    per_feature: Annotated[
        bool,
        typer.Option(
            "--per-feature",
            help="Also write each column's squared error, headed by the column's name "
            "(error.NAME where that is score, anomaly or score.*).",
        ),
    ] = False,
    threshold: Annotated[
        float | None,
        typer.Option(help="Add a 0/1 'anomaly' column: score above T.", show_default=False),
    ] = None,
    contamination: Annotated[
        float | None,
        typer.Option(
            help="Add a 0/1 'anomaly' column flagging scores above the (1-q) percentile of "
            "the training rows' scores, or of the held-out rows' where higher: at most about "
            "a share q of new rows like them.",
            show_default=False,
        ),
    ] = None,
    elbo: Annotated[
        bool,
        typer.Option(
            "--elbo", help="VAEs: score by the negative ELBO (at the posterior mean) instead."
        ),
    ] = False,
    terms: Annotated[
        bool,
        typer.Option(
            "--terms",
            help="Also write what each of the score's terms adds to it (score.residual, "
            "score.code, score.neighbour, ...): they sum to the score, and say why a row "
            "scored high.",
        ),
    ] = False,
    hist: Annotated[
        str | None,
        typer.Option(
            metavar="PNG",
            help="Also draw the scores' histogram with the threshold, and the largest column "
            "errors of the top 5 rows, into this .png (needs the plot extra).",
            show_default=False,
        ),
    ] = None,
    stdout_format: FormatOpt = StdoutFormat.csv,
    columns: ColumnsOpt = None,
    id_column: IdColumnOpt = None,
    exclude: ExcludeOpt = None,
    allow_nan: AllowNanOpt = False,
    header: HeaderOpt = None,
    delimiter: DelimiterOpt = None,
) -> None:
    """Write one anomaly score per row of DATA, in order (higher = more unusual).

    The score adds how far the row's reconstruction residual is from the training rows'
    residuals, how rare its code is among their codes (by one Gaussian of them) or its
    leading principal components among theirs (by a mixture of a few Gaussians; the rarer
    reading counts), how far the row is from the nearest training row and from the nearest
    of each of a few fixed samples of them (which a small group of unusual rows cannot
    fill), how far from its nearest rows relative to their own distances, how rare it is
    along each principal component of the training rows and in each of its columns and, in
    columns of a few integer values, how rare its values are. Each term is read on its own
    training distribution: the first two only beyond their medians, and the code also where
    it lies nearer their centre than almost all of theirs. A typical row scores about 1.3 to
    2.3 (docs/anomaly.md).
    """
    from aecli import modelfile
    from aecli.io import TableWriter
    from aecli.scoring import ScoreTable, TopRows

    ScoreTable.check_request(threshold, contamination)  # flags first, before any reading
    if hist is not None:
        from aecli import pictures

        pictures.check_target(hist, "--hist")
    fitted = modelfile.load(model)
    table = ScoreTable.make(
        fitted,
        elbo=elbo,
        per_feature=per_feature,
        threshold=threshold,
        contamination=contamination,
        terms=terms,
    )
    options = (header, delimiter, columns, id_column, allow_nan, exclude)
    with (
        model_input(fitted, data, options) as (first, chunks),
        TableWriter(
            output, table.names, (len(table.names),), protect=[data, model],
            id_name=(id_name := carried_id(first, options, output)),
            integers=table.integer_columns, stdout_format=stdout_format,
        ) as writer,
    ):  # fmt: skip
        top = TopRows(fitted) if hist is not None else None
        for chunk in chunks:
            rows = table.rows(chunk.values)
            writer.write(rows, chunk.ids if id_name else None)
            if top is not None:
                top.add(chunk.values, rows[:, 0], chunk.ids if id_name else None)
    if top is not None and hist is not None:
        from aecli import pictures

        pictures.save_scores(
            hist, top.all_scores(), table.threshold, top.top, fitted.column_names,
            protect=[data, model],
        )  # fmt: skip


# -- info / example -----------------------------------------------------------------
def info(
    model: ModelArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a model file's kind, architecture, training summary and columns."""
    from aecli.modelfile import read_described

    meta, config = read_described(model)
    report = {
        "file": model,
        "format": meta["format"],
        "aecli_version": meta.get("aecli.version"),
        "kind": config.kind,
        "architecture": config.architecture(),
        "model": meta["aecli.model"],
        "training": meta["aecli.train"],
        "summary": meta.get("aecli.summary", {}),
        "data": meta["aecli.data"],
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    typer.echo(_info_text(report, config))


def export(
    model: ModelArg,
    output: Annotated[
        str,
        typer.Option("--output", "-o", metavar="PATH", help="The .onnx file to write."),
    ],
    part: Annotated[
        str,
        typer.Option(
            "--part",
            metavar="PART",
            help="encode (codes), reconstruct (rows in original units), score (score and "
            "per-feature errors) or sample (a vae's rows from given noise).",
        ),
    ] = "encode",
) -> None:
    """Write one part of a model as an ONNX graph, its scaling inside, for serving without torch.

    The graph takes float32 rows in the original units, any number at a time,
    and gives what the matching aecli command gives. Needs the onnx extra.
    """
    from aecli import export as onnx_export
    from aecli import modelfile
    from aecli.io import write_bytes_atomic

    onnx_export.check_available()
    if part not in onnx_export.PARTS:
        raise UsageError(
            f"must be one of {', '.join(onnx_export.PARTS)}, got {part!r}", flag="--part"
        )
    check_model_output(output, model)
    fitted = modelfile.load(model)
    onnx_export.check_part(fitted, part)
    data = onnx_export.to_onnx(fitted, part)
    from aecli.io.write import naming_stdout

    if output == "-":
        with naming_stdout():
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
    else:
        write_bytes_atomic(output, data, protect=[model], flag="-o")
    tell(
        f"exported {part} of {model} to {'stdout' if output == '-' else output} (ONNX opset "
        f"{onnx_export.OPSET})"
    )


def _processes(summary: dict[str, Any]) -> str:
    """ ", 2 processes (gloo)" for a model trained under torchrun; nothing for one process."""
    size = summary.get("world_size") or 1
    return f", {size} processes ({summary.get('backend')})" if size > 1 else ""


def _info_text(report: dict[str, Any], config: Any) -> str:
    from aecli.training import epochs_text

    summary, data, train = report["summary"], report["data"], report["training"]
    final = summary.get("final", {})
    lines = [
        f"file          {report['file']} (aecli format {report['format']}, "
        f"written by aecli {report['aecli_version']})",
        f"kind          {config.kind}" + (" (tied weights)" if config.tied else ""),
        f"architecture  {config.architecture()} ({config.activation} hidden layers)",
        f"loss          {config.loss}" + _extras(config),
        f"scaling       {data.get('scale')}"
        + (f" (auto: {data['scale_reason']})" if data.get("scale_reason") else ""),
        f"trained on    {summary.get('rows', '?')} rows, {summary.get('val_rows', 0)} held out, "
        f"{epochs_text(summary)}, batch {train['batch_size']}, lr {train['lr']:g}, "
        f"seed {train['seed']}, {summary.get('device', '?')}" + _processes(summary),
        "final loss    " + ", ".join(f"{k} {v:.5g}" for k, v in final.items()),
    ]
    if summary.get("val_loss") is not None:
        lines.append(f"val loss      {summary['val_loss']:.5g}")
    if summary.get("bf16_in_fp32"):
        lines.append(
            "precision     bf16 asked; every layer ran in fp32 (too small for bf16 to pay)"
        )
    if summary.get("diverged"):
        lines.append(
            f"diverged      yes: worse than predicting each column's mean (lr {train['lr']:g} "
            "too large?)"
        )
    columns = data.get("columns")
    shape = "x".join(str(s) for s in data.get("row_shape") or [])
    named = ", ".join(columns) if columns else "(no header: x0..)"
    lines.append(f"columns       {config.n_inputs} (row shape {shape}): {named}")
    return "\n".join(lines)


def _extras(config: Any) -> str:
    parts = []
    if config.noise != "none":
        amount = (
            f"std {config.noise_std:g}" if config.noise == "gaussian" else f"{config.dropout:g}"
        )
        parts.append(f"{config.noise} noise {amount}")
    if config.kind == "sparse":
        parts.append(
            f"sparsity target {config.sparsity_target:g} weight {config.sparsity_weight:g}"
        )
    if config.kind == "vae":
        parts.append(f"beta {config.beta:g}")
    return f" ({'; '.join(parts)})" if parts else ""


def example(
    name: Annotated[str, typer.Argument(help="Dataset name: digits.")] = "digits",
    output: OutputOpt = "-",
) -> None:
    """Write a dataset that ships with aecli (so everything works offline)."""
    from aecli import datasets
    from aecli.io import TableWriter

    table = datasets.load(name)
    columns = table.columns or [f"x{i}" for i in range(table.n_features)]
    with TableWriter(output, columns, table.row_shape) as writer:
        writer.write(table.values)


def curves(
    log: Annotated[str, typer.Argument(help="A log written by 'aecli train --log'.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The .png to draw into.")],
) -> None:
    """Draw training curves (loss terms and validation loss per epoch) from a --log file."""
    from aecli import pictures
    from aecli.training import read_log

    pictures.check_target(output, "-o")
    pictures.save_curves(output, read_log(log), protect=[log])


# -- entry point -------------------------------------------------------------------
