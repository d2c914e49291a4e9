"""The model file: rebuilds the model alone, is deterministic, and refuses damage clearly."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file

from aecli import modelfile, tails
from aecli.errors import ModelFileError
from tests.conftest import FAST, SCORE_RTOL, assert_same_table, invoke


def test_round_trip_rebuilds_an_identical_model(basic_model: Path, digits: np.ndarray) -> None:
    fitted = modelfile.load(str(basic_model))
    again = modelfile.load(str(basic_model))
    rows = digits[:20]
    np.testing.assert_array_equal(fitted.reconstruct(rows), again.reconstruct(rows))
    assert modelfile.to_bytes(fitted) == basic_model.read_bytes()


def test_metadata_carries_everything(basic_model: Path) -> None:
    meta = modelfile.read_metadata(str(basic_model))
    assert meta["format"] == 16
    assert meta["aecli.model"]["kind"] == "basic"
    assert meta["aecli.model"]["latent"] == 8
    assert meta["aecli.data"]["columns"] == [f"p{i}" for i in range(64)]
    assert meta["aecli.data"]["row_shape"] == [64]
    assert meta["aecli.data"]["scale"] == "robust"  # auto, on a table (a CSV, no image shape)
    assert meta["aecli.data"]["scale_clip"] == 5.0
    assert "median" in meta["aecli.data"]["scale_reason"]
    assert meta["aecli.train"]["scale"] == "auto"
    assert meta["aecli.summary"]["epochs"] == 3
    assert set(meta["aecli.summary"]["final"]) == {"loss", "reconstruction"}


def test_no_tensor_is_stored_twice_with_tied_weights(tmp_path: Path, digits_csv: Path) -> None:
    path = tmp_path / "tied.safetensors"
    assert invoke(["train", digits_csv, "-o", path, "--tied", *FAST]).code == 0
    _, tensors, _ = modelfile.read_header(str(path))
    assert not any(
        name.startswith("model.decoder.") and name.endswith("weight") for name in tensors
    )
    fitted = modelfile.load(str(path))
    assert fitted.config.tied


@pytest.mark.determinism
@pytest.mark.parametrize("kind", ["basic", "vae"])
def test_same_seed_same_bytes(tmp_path: Path, digits_csv: Path, kind: str) -> None:
    paths = [tmp_path / f"{i}.safetensors" for i in range(3)]
    seeds = ["1", "1", "2"]
    for path, seed in zip(paths, seeds):
        args = ["train", digits_csv, "-o", path, "--kind", kind, "--seed", seed, *FAST]
        assert invoke(args).code == 0
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def _framed(header: dict, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b"hello", "not a safetensors model file"),
        (lambda b: b[: len(b) - 10], "truncated model file"),
        (lambda b: b + b"junk", "4 unexpected bytes after the tensors"),
        (lambda b: b[:8] + b"{" * 30 + b[38:], "header is not JSON"),
    ],
)
def test_damaged_files_are_refused(tmp_path: Path, basic_model: Path, mangle, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(mangle(basic_model.read_bytes()))
    with pytest.raises(ModelFileError, match=message):
        modelfile.load(str(path))


def test_a_foreign_safetensors_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ModelFileError, match="not one written by aecli"):
        modelfile.load(str(path))


def test_a_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"aecli.format": "99"})
    with pytest.raises(ModelFileError, match="format 99 is not supported"):
        modelfile.load(str(path))


def test_reading_metadata_needs_no_torch(basic_model: Path) -> None:
    code = (
        "import sys; from aecli.modelfile import read_metadata; "
        f"read_metadata({str(basic_model)!r}); "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_model_trained_elsewhere_loads_from_its_config_alone(basic_model: Path) -> None:
    """Old files lacking newer config keys still load (defaults are patched in)."""
    from safetensors.torch import load_file

    meta = modelfile.read_metadata(str(basic_model))
    raw_meta, _, _ = modelfile.read_header(str(basic_model))
    config = dict(meta["aecli.model"])
    del config["beta"], config["sparsity_weight"]
    raw_meta["aecli.model"] = json.dumps(config)
    path = basic_model.parent / "old.safetensors"
    save_file(load_file(str(basic_model)), str(path), metadata=raw_meta)
    assert modelfile.load(str(path)).config.beta == 1.0


def test_the_writer_produces_files_safetensors_reads(basic_model: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(basic_model), framework="pt") as handle:
        assert handle.metadata()["aecli.format"] == "16"
        names = set(handle.keys())
    assert {"scaler.offset", "scaler.scale", "model.encoder.0.weight"} <= names


def test_bytes_do_not_depend_on_the_process(basic_model: Path) -> None:
    """The same model serialised in fresh interpreters gives the same bytes."""
    code = (
        "import sys, hashlib; from aecli import modelfile; "
        f"print(hashlib.sha256(modelfile.to_bytes(modelfile.load({str(basic_model)!r}))).hexdigest())"
    )
    digests = {
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True).stdout
        for _ in range(3)
    }
    assert len(digests) == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("residual.mean", np.zeros(3, np.float32)),
        ("residual.precision", np.zeros((64, 3), np.float32)),
        ("residual.precision", np.full(64, np.nan, np.float32)),
        ("residual.mean", None),
    ],
)
def test_damaged_score_statistics_are_refused(
    tmp_path: Path, basic_model: Path, name: str, value: np.ndarray | None
) -> None:
    fitted = modelfile.load(str(basic_model))
    stats = fitted.code_stats
    assert stats is not None and stats.residual_precision is not None
    assert stats.residual_precision.shape == (64, 64)  # full covariance at this width
    metadata, _, _ = modelfile.read_header(str(basic_model))
    arrays = load_file(str(basic_model))
    if value is None:
        del arrays[name]
    else:
        arrays[name] = value
    path = tmp_path / "bad.safetensors"
    path.write_bytes(modelfile.serialize(arrays, metadata))
    with pytest.raises(ModelFileError, match="inconsistent aecli model file"):
        modelfile.load(str(path))


@pytest.mark.parametrize(
    ("section", "field", "value", "named"),
    [
        ("aecli.model", "noise", "salt", "--noise"),
        ("aecli.model", "loss", "auto", "--loss"),
        ("aecli.model", "activation", "swish", "--activation"),
        ("aecli.model", "tied", "yes", "'tied'"),
        ("aecli.model", "hidden", 5, "'hidden'"),
        ("aecli.model", "arch", "rnn", "--arch"),
        ("aecli.model", "channels", "ab", "'channels'"),
        ("aecli.train", "scale", "log", "--scale"),
        ("aecli.train", "lr", "fast", "'lr'"),
        ("aecli.train", "seed", -5, "--seed"),
        ("aecli.train", "beta_warmup", "x", "'beta_warmup'"),
        ("aecli.summary", "kept_epoch", float("inf"), "'kept_epoch'"),
        ("aecli.summary", "kept_epoch", "two", "'kept_epoch'"),
        ("aecli.summary", "final", {"loss": "low"}, "'final'"),
        ("aecli.summary", None, [], "aecli.summary is list"),
    ],
)
def test_a_damaged_setting_is_named_by_every_command(
    tmp_path: Path,
    basic_model: Path,
    digits_csv: Path,
    section: str,
    field: str | None,
    value: object,
    named: str,
) -> None:
    """F17: hand-edited metadata is a one-line "damaged model file" error naming the field.

    (A "noise": "salt" used to train as dropout on --resume; "lr": "fast" crashed.)
    """
    metadata, _, _ = modelfile.read_header(str(basic_model))
    if field is None:
        metadata = {**metadata, section: json.dumps(value)}
    else:
        stored = json.loads(metadata[section])
        stored[field] = value
        metadata = {**metadata, section: json.dumps(stored)}
    path = tmp_path / "bad.safetensors"
    path.write_bytes(modelfile.serialize(load_file(str(basic_model)), metadata))
    with pytest.raises(ModelFileError, match="damaged model file"):
        modelfile.load(str(path))
    data = digits_csv
    for args in (
        ["info", path],
        ["encode", path, data],
        ["train", data, "--resume", path, "-o", tmp_path / "r.safetensors"],
    ):
        result = invoke(args)
        assert result.code == 1, (args, result.stderr)
        assert "bad.safetensors: damaged model file: " in result.stderr, result.stderr
        assert named in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1


def test_a_null_format_version_is_refused(tmp_path: Path, basic_model: Path) -> None:
    metadata, _, _ = modelfile.read_header(str(basic_model))
    path = tmp_path / "bad.safetensors"
    path.write_bytes(
        modelfile.serialize(load_file(str(basic_model)), {**metadata, "aecli.format": "null"})
    )
    result = invoke(["info", path])
    assert result.code == 1 and "bad aecli format version" in result.stderr


@pytest.mark.parametrize(
    "flags",
    [[], ["--tied"], ["--kind", "denoise", "--noise", "dropout"], ["--kind", "sparse"],
     ["--kind", "vae"], ["--kind", "vae", "--loss", "mse"], ["--hidden", "none"]],
)  # fmt: skip
def test_every_kind_round_trips_through_its_file(
    tmp_path: Path, digits_csv: Path, digits: np.ndarray, flags: list[str]
) -> None:
    path = tmp_path / "m.safetensors"
    assert invoke(["train", digits_csv, "-o", path, *FAST, *flags]).code == 0
    fitted = modelfile.load(str(path))
    assert modelfile.to_bytes(fitted) == path.read_bytes()  # load then save: the same bytes
    again = tmp_path / "again.safetensors"
    modelfile.save(fitted, str(again))
    reloaded = modelfile.load(str(again))
    rows = digits[:50]
    np.testing.assert_array_equal(reloaded.encode(rows), fitted.encode(rows))
    np.testing.assert_array_equal(reloaded.reconstruct(rows), fitted.reconstruct(rows))
    assert reloaded.config == fitted.config and reloaded.train_config == fitted.train_config


@pytest.mark.determinism
def test_a_file_of_todays_format_still_gives_its_outputs() -> None:
    """A golden sparse model of the current format (residual score statistics), with outputs."""
    data = Path(__file__).parent / "data"
    model, rows = data / "format1-residual.safetensors", data / "format1-rows.csv"
    fitted = modelfile.load(str(model))
    assert fitted.code_stats is not None and fitted.code_stats.residual_precision is not None
    for command, name in (("encode", "codes"), ("reconstruct", "recon"), ("score", "scores")):
        result = invoke([command, model, rows])
        assert result.code == 0, result.stderr
        assert_same_table(result.text, (data / f"format1-residual-{name}.csv").read_text())


@pytest.mark.determinism
def test_a_format_2_file_keeps_its_three_term_score() -> None:
    """Written by aecli before the relative term (format 2: a neighbour reference, no
    reach): it scores as it did then, ½ T(residual) + ½ T(code) + T(neighbour)."""
    data = Path(__file__).parent / "data"
    model = data / "format2-basic.safetensors"
    assert modelfile.read_header(str(model))[0]["aecli.format"] == "2"
    stats = modelfile.load(str(model)).code_stats
    assert stats is not None and stats.reference is not None and stats.reach is None
    result = invoke(["score", model, data / "format1-rows.csv"])
    assert result.code == 0, result.stderr
    assert_same_table(result.text, (data / "format2-basic-scores.csv").read_text(), rtol=SCORE_RTOL)


@pytest.mark.parametrize(
    ("model", "parts"),
    [
        ("format1-basic", ["error"]),  # no statistics: the reconstruction error alone
        ("format1-robust", ["error", "code"]),  # each over its training median
        ("format1-residual", ["residual", "code"]),
        ("format2-basic", ["residual", "code", "neighbour"]),  # their tails, ½ ½ 1
    ],
)
def test_an_older_files_terms_add_to_the_score_it_gives(model: str, parts: list[str]) -> None:
    """``score --terms`` on files of older scores: the terms that score adds, as written."""
    data = Path(__file__).parent / "data"
    args = [data / f"{model}.safetensors", data / "format1-rows.csv"]
    result = invoke(["score", *args, "--terms"])
    assert result.code == 0, result.stderr
    lines = result.text.splitlines()
    assert lines[0].split(",") == ["score", *(f"score.{name}" for name in parts)]
    table = np.loadtxt(lines[1:], delimiter=",")
    np.testing.assert_allclose(table[:, 1:].sum(1), table[:, 0], rtol=1e-6, atol=1e-6)
    assert (table[:, 1:] > 0).any(0).all()
    alone = np.loadtxt(invoke(["score", *args]).text.splitlines()[1:])
    np.testing.assert_array_equal(table[:, 0], alone)


@pytest.mark.determinism
def test_a_format_4_file_keeps_its_five_term_score(tmp_path: Path) -> None:
    """Written by aecli before the discrete term (format 4), on rows with two integer columns
    of a few values that today's writer counts: it scores as it did then, five terms."""
    data = Path(__file__).parent / "data"
    model, rows = data / "format4-discrete.safetensors", data / "format4-rows.csv"
    assert modelfile.read_header(str(model))[0]["aecli.format"] == "4"
    stats = modelfile.load(str(model)).code_stats
    assert stats is not None and stats.density is not None and stats.discrete is None
    result = invoke(["score", model, rows])
    assert result.code == 0, result.stderr
    assert_same_table(
        result.text, (data / "format4-discrete-scores.csv").read_text(), rtol=SCORE_RTOL
    )
    today = tmp_path / "m.safetensors"
    assert invoke(["train", rows, "-o", today, "--epochs", "3", "--seed", "1", "-q"]).code == 0
    counted = modelfile.load(str(today)).code_stats
    assert counted is not None and counted.discrete is not None
    assert counted.discrete.columns.tolist() == [2, 3]


def _stats_of_fixture(
    version: str, name: str = "basic", rows_file: str = "format4-rows.csv"
) -> tuple[Any, Path, Path]:
    """The code statistics of ``tests/data/format{version}-{name}``, after checking that the
    file is of that format, and the fixture's model and rows."""
    data = Path(__file__).parent / "data"
    model, rows = data / f"format{version}-{name}.safetensors", data / rows_file
    assert modelfile.read_header(str(model))[0]["aecli.format"] == version
    return modelfile.load(str(model)).code_stats, model, rows


def _scores_as_written(version: str, model: Path, rows: Path, name: str = "basic") -> str:
    """``score`` gives the fixture's scores, written by the aecli of that format; returns them."""
    result = invoke(["score", model, rows])
    assert result.code == 0, result.stderr
    want = (Path(__file__).parent / "data" / f"format{version}-{name}-scores.csv").read_text()
    assert_same_table(result.text, want, rtol=SCORE_RTOL)
    return want


@pytest.mark.determinism
@pytest.mark.parametrize(("version", "floors"), [("7", {}), ("8", {"residual": 0.5, "code": 0.5})])
def test_a_file_before_the_codes_lower_tail_scores_as_written(
    version: str, floors: dict[str, float]
) -> None:
    """Written by aecli before the autoencoder's terms counted above their medians only
    (format 7, no floor.*), or before the code's lower tail counted (format 8, no lower.*):
    each scores as it did then."""
    stats, model, rows = _stats_of_fixture(version)
    assert stats is not None and stats.discrete is not None and stats.lowers == {}
    assert stats.floors == pytest.approx({name: np.log(2) for name in floors}, rel=1e-6)
    _scores_as_written(version, model, rows)


@pytest.mark.determinism
def test_a_file_before_the_discrete_terms_saturation_scores_as_written() -> None:
    """Written by aecli before the discrete term's rarity saturated (format 10, no
    discrete.saturation): each value counts its -log share whole, as it did then."""
    stats, model, rows = _stats_of_fixture("10")
    assert stats is not None and stats.discrete is not None and stats.discrete.saturation == 0
    assert stats.samples is not None and stats.lowers == {"code": 0.5}
    _scores_as_written("10", model, rows)


@pytest.mark.determinism
def test_a_file_before_the_code_mixture_scores_as_written() -> None:
    """Written by aecli before the code was read by a mixture too (format 11, no mixture.*):
    its code counts by its one Gaussian, as it did then."""
    stats, model, rows = _stats_of_fixture("11")
    assert stats is not None and stats.mixture is None and stats.grids is not None
    assert "mixture" not in stats.grids and stats.discrete is not None
    _scores_as_written("11", model, rows)


@pytest.mark.determinism
def test_a_file_before_the_tails_spans_scores_as_written(tmp_path: Path) -> None:
    """Written by aecli before each term's tail grew by its own span past its 99th
    percentile (format 13, no span.*): it grows by ln(q99 / q50), as it did then. Its
    table has a flag that 2 of its 300 rows raise, so that the two readings differ: by
    ln(q99 / q50), 0 to rounding, those two rows scored tens of thousands, and by the
    span they score as the table's other rare rows do."""
    stats, model, rows = _stats_of_fixture("13", "flag", "format13-flag-rows.csv")
    assert stats is not None and stats.spans == {} and stats.mixture is not None
    want = _scores_as_written("13", model, rows, "flag")
    assert sorted(float(v) for v in want.split()[1:])[-2] > 1e4
    today = tmp_path / "m.safetensors"
    assert invoke(["train", rows, "-o", today, "--epochs", "3", "--seed", "1", "-q"]).code == 0
    result = invoke(["score", today, rows])
    assert result.code == 0 and max(float(v) for v in result.text.split()[1:]) < 50


@pytest.mark.determinism
def test_a_file_before_the_marginal_term_scores_as_written() -> None:
    """Written by aecli before the density was read along the columns too (format 14, no
    marginal.*): its density counts half, along the components alone, as it did then."""
    stats, model, rows = _stats_of_fixture("14")
    assert stats is not None and stats.marginal is None and stats.grids is not None
    assert "marginal" not in stats.grids and stats.spans.keys() == stats.grids.keys()
    assert tails.weights(stats.grids)["density"] == 0.5
    _scores_as_written("14", model, rows)


@pytest.mark.determinism
def test_a_file_whose_mixture_reads_the_codes_scores_as_written() -> None:
    """Written by aecli when the mixture read the codes (format 12, no mixture.axes): it
    reads them still, as it did then."""
    stats, model, rows = _stats_of_fixture("12")
    assert stats is not None and stats.mixture is not None and stats.mixture.axes is None
    _scores_as_written("12", model, rows)


def test_a_file_of_today_has_the_floors_and_the_codes_lower_tail(tmp_path: Path) -> None:
    """Format 9: the autoencoder's terms count above their medians, and the code's lower
    tail counts too, at half its weight; format 10: the distance to the nearest row and to
    the nearest of each sample a quarter each; format 12: the code's upper tail is the larger
    of its Gaussian's and its mixture's: the score is the formula with them."""
    from aecli.diagnostics import row_terms
    from aecli.io import read_table

    rows = Path(__file__).parent / "data" / "format4-rows.csv"
    today = tmp_path / "m.safetensors"
    assert invoke(["train", rows, "-o", today, "--epochs", "3", "--seed", "1", "-q"]).code == 0
    fitted = modelfile.load(str(today))
    assert fitted.code_stats is not None and fitted.code_stats.grids is not None
    median = float(np.float32(np.log(2)))
    assert fitted.code_stats.floors == {"residual": median, "code": median}
    assert fitted.code_stats.lowers == {"code": 0.5}
    terms = row_terms(fitted, read_table(str(rows)).values)
    grids = fitted.code_stats.grids
    keys = {"residual": "residual", "code": "distance"}
    quarters = ("neighbour", "sampled", "density", "marginal")  # format 15: the density's two
    weight = {name: 0.25 if name in quarters else 0.5 for name in grids}
    spans = fitted.code_stats.spans
    assert spans.keys() == grids.keys()  # format 14: each tail's span past its q99
    assert spans == {name: float(np.float32(tails.span(grid))) for name, grid in grids.items()}
    upper = {
        name: tails.tail(terms[keys.get(name, name)], grid, None, spans[name])
        for name, grid in grids.items()
    }
    upper["code"] = np.maximum(upper["code"], upper.pop("mixture"))
    count = {name: np.maximum(tail - (name in keys) * median, 0) for name, tail in upper.items()}
    share = np.maximum(tails.below(terms["distance"], grids["code"]), 1 / len(grids["code"]))
    count["code"] = count["code"] + 0.5 * np.maximum(-np.log(2 * share), 0)
    assert fitted.code_stats.powers == dict.fromkeys(count, 1.25)  # format 16
    want = sum(weight[name] * c**1.25 for name, c in count.items())
    np.testing.assert_allclose(terms["score"], want, rtol=1e-5)
    assert (tails.below(terms["distance"], grids["code"]) < 0.5).any()  # the lower tail counts


ALONE = "floors, lower tails, spans or powers for a score without its terms'"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("floor.noise", [0.5], "floor for 'noise', a term the score does not have"),
        ("floor.code", [0.5, 0.5], "floor.code is not one number in [0, 7)"),
        ("floor.code", [-0.1], "floor.code is not one number in [0, 7)"),
        ("floor.code", [7.5], "floor.code is not one number in [0, 7)"),
        ("floor.alone", [0.5], ALONE),
        ("lower.alone", [0.5], ALONE),
        ("lower.noise", [0.5], "lower tail for 'noise', a term the score does not have"),
        ("lower.code", [0.0], "lower.code is not one number in (0, 1]"),
        ("lower.code", [1.5], "lower.code is not one number in (0, 1]"),
        ("lower.code", [0.5, 0.5], "lower.code is not one number in (0, 1]"),
        ("span.noise", [0.5], "tail span for 'noise', a term the score does not have"),
        ("span.code", [0.0], "span.code is not one number in (0, 1000)"),
        ("span.code", [2000.0], "span.code is not one number in (0, 1000)"),
        ("span.alone", [0.5], ALONE),
        ("power.noise", [1.25], "a power for 'noise', a term the score does not have"),
        ("power.code", [0.5], "power.code is not one number in [1, 4]"),
        ("power.code", [1.25, 1.25], "power.code is not one number in [1, 4]"),
        ("power.alone", [1.25], ALONE),
    ],
)
def test_a_bad_floor_is_refused(
    tmp_path: Path, basic_model: Path, name: str, value: list[float], says: str
) -> None:
    metadata, _, _ = modelfile.read_header(str(basic_model))
    arrays = load_file(str(basic_model))
    if name.endswith(".alone"):  # a format 1 file's statistics: no neighbour terms, no grids
        terms = ("neighbours.", "terms.", "density.", "discrete.", "floor.", "lower.", "mixture.")
        terms += ("span.", "power.")
        arrays = {k: v for k, v in arrays.items() if not k.startswith(terms)}
        name = name.replace("alone", "code")
    arrays[name] = np.array(value, np.float32)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(modelfile.serialize(arrays, metadata))
    result = invoke(["score", bad, tmp_path / "none.csv"])
    assert result.code == 1 and says in result.stderr, result.stderr


def test_reading_the_metadata_reads_the_header_only(tmp_path: Path, basic_model: Path) -> None:
    """F30: info read every byte of the file to parse its header."""
    data = basic_model.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    read: list[int] = []
    real_open = open

    class Counting:
        def __init__(self, handle):  # type: ignore[no-untyped-def]
            self.handle = handle

        def read(self, n: int = -1) -> bytes:
            read.append(n)
            return self.handle.read(n)

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(self.handle, name)

        def __enter__(self):  # type: ignore[no-untyped-def]
            return self

        def __exit__(self, *exc):  # type: ignore[no-untyped-def]
            self.handle.close()

    import builtins

    builtins.open = lambda *a, **k: Counting(real_open(*a, **k))  # type: ignore[assignment]
    try:
        meta = modelfile.read_metadata(str(basic_model))
    finally:
        builtins.open = real_open  # type: ignore[assignment]
    assert meta["aecli.model"]["kind"] == "basic"
    assert sum(read) == 8 + size < len(data)
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(data[:-10])
    with pytest.raises(ModelFileError, match="truncated model file"):
        modelfile.read_metadata(str(truncated))


def _with_tensor(model: Path, name: str, change: Any, out: Path) -> Path:
    """A copy of ``model`` whose tensor ``name`` is ``change(values)``, header untouched."""
    raw = model.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    start, end = header[name]["data_offsets"]
    body = bytearray(raw[8 + size :])
    values = np.frombuffer(bytes(body[start:end]), dtype=np.float32)
    body[start:end] = change(values).astype(np.float32).tobytes()
    out.write_bytes(raw[: 8 + size] + bytes(body))
    return out


@pytest.mark.parametrize(
    ("name", "change", "says"),
    [
        ("model.encoder.0.weight", lambda v: v * np.nan, "model.encoder.0.weight holds values"),
        ("scores.score", lambda v: v * np.nan, "scores.score holds values that are not finite"),
        ("scores.score", lambda v: v[::-1], "scores.score: score percentiles that decrease"),
        ("scaler.scale", lambda v: v + np.inf, "scaler.scale holds values that are not finite"),
        ("scaler.scale", lambda v: v * 0, "scaler.scale: a column scale that is not positive"),
    ],
)
def test_a_file_with_values_no_model_has_is_damaged(
    tmp_path: Path, basic_model: Path, digits_csv: Path, name: str, change: Any, says: str
) -> None:
    """F3-6: NaN weights or percentiles were used with exit 0 (nan codes, nothing flagged)."""
    damaged = _with_tensor(basic_model, name, change, tmp_path / "d.safetensors")
    for command in (["encode", damaged, digits_csv], ["score", damaged, digits_csv]):
        result = invoke(command)
        assert result.code == 1 and result.stdout == b"", command
        assert result.stderr.startswith(f"aecli: error: {damaged}: inconsistent"), result.stderr
        assert says in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("dtype", [np.float16, np.int32])
def test_a_tensor_aecli_does_not_write_so_is_refused_in_one_line(
    tmp_path: Path, basic_model: Path, digits_csv: Path, dtype: Any
) -> None:
    """float16 is for a wide table's reference rows only (format 7): a float16 weight failed
    in the first product with an internal error, and an int32 weight was read as a float."""
    from safetensors.numpy import save_file as save_arrays

    metadata, _, _ = modelfile.read_header(str(basic_model))
    arrays = load_file(str(basic_model))
    arrays["model.encoder.0.weight"] = arrays["model.encoder.0.weight"].astype(dtype)
    path = tmp_path / "d.safetensors"
    save_arrays(arrays, str(path), metadata=metadata)
    result = invoke(["score", path, digits_csv])
    name = np.dtype(dtype).name
    assert result.code == 1 and result.stdout == b""
    assert result.stderr == (
        f"aecli: error: {path}: inconsistent aecli model file "
        f"(model.encoder.0.weight is {name}, not float32)\n"
    )


@pytest.mark.parametrize(
    ("columns", "says"),
    [(list(range(64)), "columns are not a list of names"), (["a", "b"], "2 column names for")],
)
def test_info_refuses_the_column_names_every_other_command_refuses(
    tmp_path: Path, basic_model: Path, digits_csv: Path, columns: list[object], says: str
) -> None:
    """F3-9: number-typed column names made info exit 70 (an internal error)."""
    metadata, _, _ = modelfile.read_header(str(basic_model))
    data = json.loads(metadata["aecli.data"])
    metadata = {**metadata, "aecli.data": json.dumps({**data, "columns": columns})}
    path = tmp_path / "bad.safetensors"
    path.write_bytes(modelfile.serialize(load_file(str(basic_model)), metadata))
    for args in (["info", path], ["info", path, "--json"], ["encode", path, digits_csv]):
        result = invoke(args)
        assert result.code == 1, (args, result.stderr)
        assert result.stderr.startswith(f"aecli: error: {path}: inconsistent aecli model file")
        assert says in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.determinism
def test_a_format_5_file_keeps_its_distances_in_the_models_units() -> None:
    """Written by aecli before the distances had their own units (format 5), on rows in
    [0, 1] (a flag and three shares, two of them narrow): it scores as it did then."""
    data = Path(__file__).parent / "data"
    model, rows = data / "format5-unit.safetensors", data / "format5-rows.csv"
    assert modelfile.read_header(str(model))[0]["aecli.format"] == "5"
    fitted = modelfile.load(str(model))
    stats = fitted.code_stats
    assert fitted.scaler.method == "none" and stats is not None and stats.discrete is not None
    assert stats.units is None
    result = invoke(["score", model, rows])
    assert result.code == 0, result.stderr
    assert_same_table(result.text, (data / "format5-unit-scores.csv").read_text(), rtol=SCORE_RTOL)


def test_a_file_before_the_terms_powers_scores_as_written() -> None:
    """Written by aecli before each term's count was raised to a power (format 15, no
    power.*): its terms add as they are, as they did then."""
    stats, model, rows = _stats_of_fixture("15")
    assert stats is not None and stats.powers == {} and stats.marginal is not None
    assert stats.grids is not None and stats.spans.keys() == stats.grids.keys()
    _scores_as_written("15", model, rows)
