"""aecli export: onnxruntime on the exported graph gives what aecli's own commands give."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAST, invoke

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

MODELS = {
    "basic": [],
    "tied": ["--tied", "--hidden", "32,16", "--activation", "selu"],
    "denoise": ["--kind", "denoise", "--noise", "dropout", "--hidden", "none"],
    "sparse": ["--kind", "sparse", "--activation", "tanh"],
    "relu-images": ["--activation", "relu", "--image-shape", "8x8"],
    "vae": ["--kind", "vae"],
    "vae-bce": ["--kind", "vae", "--loss", "bce", "--scale", "minmax"],
    "minmax": ["--scale", "minmax"],  # the distances in their own units (format 6)
    "conv-tied": ["--arch", "conv", "--channels", "4,8", "--image-shape", "8x8", "--tied"],
    "conv-vae": ["--arch", "conv", "--channels", "4", "--image-shape", "8x8", "--kind", "vae"],
    "old-score": [],  # a model file without the score's statistics (before they existed)
    "half-reference": [],  # neighbour rows in float16 (format 7), as a wide table keeps them
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, digits_csv: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("export")
    paths = {}
    for name, flags in MODELS.items():
        path = folder / f"{name}.safetensors"
        with pytest.MonkeyPatch.context() as patch:
            if name == "half-reference":  # float32 would keep 64 of the 400 rows, float16 128
                patch.setattr("aecli.neighbours.REFERENCE_VALUES", 64 * 64)
            result = invoke(["train", digits_csv, "-o", path, "--seed", "3", *FAST, *flags])
        assert result.code == 0, result.stderr
        paths[name] = path
    _strip_score_statistics(paths["old-score"])
    return paths


def _strip_score_statistics(path: Path) -> None:
    from safetensors.numpy import load_file

    from aecli import modelfile

    metadata, _, _ = modelfile.read_header(str(path))
    arrays = {
        k: v
        for k, v in load_file(str(path)).items()
        if not k.startswith(("codes.", "residual.", "scores.score"))
    }
    path.write_bytes(modelfile.serialize(arrays, metadata))


def _export(model: Path, part: str, tmp_path: Path) -> Path:
    out = tmp_path / f"{part}.onnx"
    result = invoke(["export", model, "-o", out, "--part", part])
    assert result.code == 0, result.stderr
    assert result.stdout == b""  # the report goes to stderr
    return out


def _run(path: Path, values: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    return session.run(None, {inp.name: values.astype(np.float32)})


def _close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-5) -> None:
    """Within 1e-5 relative, with the output's own scale as the floor for values near 0."""
    floor = rtol * float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=rtol, atol=floor)


# The score reads each term's place among the training rows' percentiles: where training
# rows tie, one percentile step is 1/1001 of the way, and a float32 rounding of a code
# (onnxruntime's convolutions against torch's) can cross it. 1e-3 relative still ranks and
# thresholds every row alike; encode, reconstruct and the per-feature errors stay at 1e-5.
SCORE_RTOL = 1e-3


def _cli_npy(args: list, tmp_path: Path) -> np.ndarray:
    out = tmp_path / "out.npy"
    result = invoke([*args, "-o", out])
    assert result.code == 0, result.stderr
    return np.load(out)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_part_matches_the_commands(
    name: str, models: dict[str, Path], digits: np.ndarray, digits_csv: Path, tmp_path: Path
) -> None:
    model = models[name]
    rows = digits[:400]
    codes = _cli_npy(["encode", model, digits_csv], tmp_path)
    (got,) = _run(_export(model, "encode", tmp_path), rows)
    _close(got, codes)
    recon = _cli_npy(["reconstruct", model, digits_csv], tmp_path)
    (got,) = _run(_export(model, "reconstruct", tmp_path), rows)
    _close(got, recon)
    scores = _cli_npy(["score", model, digits_csv, "--per-feature"], tmp_path)
    score, per_feature = _run(_export(model, "score", tmp_path), rows)
    assert score.shape == (400,) and per_feature.shape == (400, 64)
    _close(score, scores[:, 0], SCORE_RTOL)
    _close(per_feature, scores[:, 1:])


def test_the_models_with_their_own_distance_units_are_among_those_matched(
    models: dict[str, Path],
) -> None:
    """What makes the graph's ``in_units`` checked: min-max scaled rows get the distances'
    own units, robust-scaled ones and images keep the model's."""
    from aecli import modelfile

    def units(name: str) -> object:
        stats = modelfile.load(str(models[name])).code_stats
        assert stats is not None
        return stats.units

    assert units("minmax") is not None and units("vae-bce") is not None
    assert units("basic") is None and units("relu-images") is None


def test_a_float16_reference_is_among_those_matched(models: dict[str, Path]) -> None:
    """The graph holds the float16 rows as the float32 values the commands compute with."""
    from aecli import modelfile

    _, tensors, _ = modelfile.read_header(str(models["half-reference"]))
    assert tensors["neighbours.reference"]["dtype"] == "F16"
    assert tensors["neighbours.reference"]["shape"] == [128, 64]


def test_the_graph_keeps_a_float16_reference_in_float16_and_once(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """The rows are one float16 constant behind a Cast, not the float32 copy the exporter
    folds the Cast into, nor a second reference-sized constant of their squares (their
    norms are a constant of one value a row). A model of float32 rows keeps them so."""
    from onnx import TensorProto, numpy_helper

    proto = onnx.load(str(_export(models["half-reference"], "score", tmp_path)))
    large = {c.name: c for c in proto.graph.initializer if np.prod(c.dims) >= 128 * 64}
    assert [c.data_type for c in large.values()] == [TensorProto.FLOAT16], list(large)
    (reference,) = large.values()
    from aecli import modelfile

    stats = modelfile.load(str(models["half-reference"])).code_stats
    assert stats is not None and stats.reference is not None
    np.testing.assert_array_equal(
        numpy_helper.to_array(reference).astype(np.float32), stats.reference.astype(np.float32)
    )
    casts = [n for n in proto.graph.node if n.op_type == "Cast" and n.input == [reference.name]]
    assert len(casts) == 1 and casts[0].output == ["reference"]
    plain = onnx.load(str(_export(models["basic"], "score", tmp_path)))
    assert all(c.data_type != TensorProto.FLOAT16 for c in plain.graph.initializer)


@pytest.mark.parametrize("name", ["vae", "vae-bce", "conv-vae"])
def test_sample_decodes_the_given_noise_as_aecli_sample_does(
    name: str, models: dict[str, Path], tmp_path: Path
) -> None:
    import torch

    model = models[name]
    rows = _cli_npy(["sample", model, "-n", "50", "--seed", "7"], tmp_path)
    generator = torch.Generator().manual_seed(7)
    latent = json.loads(invoke(["info", model, "--json"]).text)["model"]["latent"]
    noise = torch.randn(50, latent, generator=generator).numpy()  # what sample draws
    (got,) = _run(_export(model, "sample", tmp_path), noise)
    _close(got, rows.reshape(50, -1))


def test_the_file_is_valid_onnx_with_aecli_metadata(
    models: dict[str, Path], tmp_path: Path
) -> None:
    from aecli import __version__

    path = _export(models["basic"], "score", tmp_path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 18
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["aecli.version"] == __version__
    assert meta["aecli.part"] == "score"
    assert json.loads(meta["aecli.model"])["kind"] == "basic"
    assert json.loads(meta["aecli.input_names"]) == [f"p{i}" for i in range(64)]
    assert json.loads(meta["aecli.output_names"])["per_feature"][:2] == ["p0", "p1"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["rows"]
    assert session.get_inputs()[0].shape[1] == 64  # a fixed width, any number of rows
    assert [o.name for o in session.get_outputs()] == ["score", "per_feature"]
    one = _run(path, np.zeros((1, 64)))[0]
    assert one.shape == (1,)


def test_bad_requests_are_one_line_exit_2(
    models: dict[str, Path], digits_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "x.onnx"
    result = invoke(["export", models["basic"], "-o", out, "--part", "sample"])
    assert result.code == 2 and "--part: sampling needs a vae" in result.stderr
    result = invoke(["export", models["basic"], "-o", out, "--part", "decode"])
    assert result.code == 2 and "--part: must be one of" in result.stderr
    result = invoke(["export", models["basic"], "-o", models["basic"]])
    assert result.code == 2 and "refusing to overwrite" in result.stderr
    result = invoke(["export", models["basic"], "-o", tmp_path / "no" / "x.onnx"])
    assert result.code == 2 and "does not exist" in result.stderr
    assert not out.exists()
    result = invoke(["export", digits_csv, "-o", out])
    assert result.code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_without_the_extra_export_says_how_to_get_it(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript now fails
    out = tmp_path / "x.onnx"
    result = invoke(["export", models["basic"], "-o", out])
    assert result.code == 2
    assert "pip install '.[onnx]'" in result.stderr and "onnxscript" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("name", ["tied", "sparse", "vae-bce", "conv-vae"])
def test_every_part_takes_the_fast_traced_exporter(name: str, models: dict[str, Path]) -> None:
    """The TorchScript exporter (0.1 s, not the dynamo one's 8) captures each part whole."""
    import torch

    from aecli import export, modelfile

    fitted = modelfile.load(str(models[name]))
    for part in export.PARTS:
        if part == "sample" and fitted.config.kind != "vae":
            continue
        width = fitted.config.latent if part == "sample" else fitted.config.n_inputs
        input_name, output_names = export.SIGNATURES[part]
        graph = export.graph_for(fitted, part).eval()
        proto = export._traced(graph, torch.zeros(2, width), input_name, output_names)
        assert proto is not None, part
        assert [o.name for o in proto.graph.output] == list(output_names)


def test_a_torch_without_the_traced_exporter_exports_through_dynamo(
    models: dict[str, Path], digits: np.ndarray, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from aecli import export, modelfile

    monkeypatch.setattr(export, "_traced", lambda *args: None)  # as if torch had removed it
    fitted = modelfile.load(str(models["basic"]))
    path = tmp_path / "dynamo.onnx"
    path.write_bytes(export.to_onnx(fitted, "encode"))
    (got,) = _run(path, digits[:50])
    _close(got, fitted.encode(digits[:50]))


def test_far_and_undefined_rows_score_as_the_commands_do(
    models: dict[str, Path], digits: np.ndarray, tmp_path: Path
) -> None:
    """A row beyond every bin of the density term reads the flat end of its histograms, and
    a row of NaN (the Python API takes one) scores NaN in the graph too, not a failed gather."""
    from aecli import modelfile
    from aecli.diagnostics import row_terms

    rows = digits[:5].astype(np.float32)
    rows[1] *= 1e6
    rows[2, 3] = np.nan
    (score, _) = _run(_export(models["basic"], "score", tmp_path), rows)
    want = row_terms(modelfile.load(str(models["basic"])), rows)["score"]
    assert np.isnan(score[2]) and np.isnan(want[2])
    finite = [0, 1, 3, 4]
    _close(score[finite], want[finite], SCORE_RTOL)


@pytest.mark.parametrize("rows", [2, 3, 70])
def test_a_reference_smaller_than_a_sample_scores_as_the_command_does(
    rows: int, digits: np.ndarray, tmp_path: Path
) -> None:
    """The sampled term (format 10) of a reference of fewer rows than a sample: each sample
    holds all rows but one, and a sample of the row itself alone counts its nearest other
    row. The graph must not read that by an infinite distance, which it clamps to float32's
    largest (a two-row table scored 1e5 there, the command 1.55)."""
    table = tmp_path / "rows.npy"
    np.save(table, digits[:rows])
    model = tmp_path / "m.safetensors"
    assert invoke(["train", table, "-o", model, *FAST]).code == 0
    want = _cli_npy(["score", model, table], tmp_path)
    score, _ = _run(_export(model, "score", tmp_path), digits[:rows])
    _close(score, want[:, 0], SCORE_RTOL)


def test_the_tails_spans_are_the_graphs_too(tmp_path: Path) -> None:
    """Format 14: past its 99th percentile each term's tail grows by one per its file's
    span. On a table with a flag that 2 of its 300 rows raise, the discrete term's span is
    not ln(q99 / q50), and the graph scores the flagged rows and a far one as `score` does."""
    from aecli import modelfile, tails
    from aecli.io import read_table

    rows = Path(__file__).parent / "data" / "format13-flag-rows.csv"
    model = tmp_path / "m.safetensors"
    assert invoke(["train", rows, "-o", model, "--epochs", "3", "--seed", "1", "-q"]).code == 0
    stats = modelfile.load(str(model)).code_stats
    assert stats is not None and stats.grids is not None
    q50, q99 = tails.knees(stats.grids["discrete"].astype(np.float64))
    assert stats.spans["discrete"] > 100 * np.log(q99 / q50)
    values = read_table(str(rows)).values.astype(np.float32)
    values = np.vstack([values, values[:1] * 50])  # and a row far beyond every training row
    table = tmp_path / "rows.npy"
    np.save(table, values)
    want = _cli_npy(["score", model, table], tmp_path)
    score, _ = _run(_export(model, "score", tmp_path), values)
    _close(score, want[:, 0], SCORE_RTOL)


def test_a_term_without_spread_is_the_graphs_too(digits: np.ndarray, tmp_path: Path) -> None:
    """On a table of five rows repeated, the neighbour terms' training values are all 0:
    their spans are SPAN_WITHOUT_SPREAD, and the graph scores rows near and far as `score`."""
    from aecli import modelfile, tails

    table, model = tmp_path / "rows.npy", tmp_path / "m.safetensors"
    np.save(table, np.repeat(digits[:5], 40, axis=0))
    assert invoke(["train", table, "-o", model, *FAST]).code == 0
    stats = modelfile.load(str(model)).code_stats
    assert stats is not None and stats.spans["neighbour"] == tails.SPAN_WITHOUT_SPREAD
    probe = np.vstack([digits[:5], digits[:5] + 0.5, digits[5:10]]).astype(np.float32)
    np.save(table, probe)
    want = _cli_npy(["score", model, table], tmp_path)
    score, _ = _run(_export(model, "score", tmp_path), probe)
    _close(score, want[:, 0], SCORE_RTOL)
    assert want[:, 0].max() < 100  # each term at most one past its F
