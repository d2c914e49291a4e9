"""Every command in-process through the real entry point: output, messages, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aecli import __version__, modelfile
from tests.conftest import FAST, invoke


def parse_csv(data: bytes) -> tuple[list[str], np.ndarray]:
    lines = data.decode().splitlines()
    rows = [[float(v) for v in line.split(",")] for line in lines[1:]]
    return lines[0].split(","), np.array(rows, dtype=np.float32)


def test_version_and_help() -> None:
    assert invoke(["--version"]).text.strip() == f"aecli {__version__}"
    result = invoke(["--help"])
    assert result.code == 0
    for command in ("train", "encode", "reconstruct", "sample", "info", "example"):
        assert command in result.text


@pytest.mark.parametrize(
    "args",
    [[], ["--help"], ["-h"], ["--help", "train"], ["trian"], ["train", "--help"], ["info", "-h"]],
)
def test_building_only_the_named_command_changes_nothing(args: list[str]) -> None:
    """main() builds the named command alone; help and errors match the whole app's."""
    from typer.testing import CliRunner

    from aecli.cli import app

    whole = CliRunner().invoke(app, args, prog_name="aecli")
    lazy = invoke(args)
    if args == ["trian"]:  # click's message and suggestion, which aecli puts on one line
        message = whole.output.strip().splitlines()[-1].removeprefix("Error: ")
        assert "Did you mean 'train'?" in message
        assert lazy.code == 2 and f"aecli: error: {message}" in lazy.stderr
    else:  # help, on stdout (no arguments at all is help too, and exit 0)
        assert "Usage: aecli" in lazy.text and lazy.code == 0
        assert lazy.text.strip() == whole.output.strip()


@pytest.mark.parametrize(
    "extra",
    [
        ["--kind", "basic", "--hidden", "none"],
        ["--kind", "basic", "--hidden", "32,16", "--tied", "--activation", "relu"],
        ["--kind", "denoise", "--noise", "dropout", "--dropout", "0.3"],
        ["--kind", "denoise", "--noise", "gaussian", "--noise-std", "0.3"],
        ["--kind", "sparse", "--latent", "80", "--sparsity-target", "0.05"],
        ["--kind", "vae", "--loss", "bce", "--beta", "0.5"],
        ["--kind", "vae", "--loss", "mse", "--scale", "standard"],
        ["--kind", "basic", "--loss", "bce", "--weight-decay", "1e-4", "--activation", "tanh"],
    ],
    ids=lambda e: "_".join(a.strip("-") for a in e),
)
def test_train_every_kind_from_the_shell(
    tmp_path: Path, digits_csv: Path, extra: list[str]
) -> None:
    path = tmp_path / "m.safetensors"
    result = invoke(["train", digits_csv, "-o", path, "--epochs", "2", *extra])
    assert result.code == 0, result.stderr
    assert result.stdout == b""  # data only on stdout; the summary goes to stderr
    assert "trained" in result.stderr and str(path) in result.stderr
    fitted = modelfile.load(str(path))
    assert fitted.config.kind == extra[1]


def test_train_summary_is_silenced_by_quiet(tmp_path: Path, digits_csv: Path) -> None:
    result = invoke(["train", digits_csv, "-o", tmp_path / "m.safetensors", *FAST])
    assert (result.code, result.stdout, result.stderr) == (0, b"", "")


def test_encode_writes_codes_with_z_header(basic_model: Path, digits_csv: Path) -> None:
    result = invoke(["encode", basic_model, digits_csv])
    assert result.code == 0, result.stderr
    header, codes = parse_csv(result.stdout)
    assert header == [f"z{i}" for i in range(8)]
    assert codes.shape == (400, 8)
    fitted = modelfile.load(str(basic_model))
    from aecli.io import read_table

    expected = fitted.encode(read_table(str(digits_csv)).values)
    np.testing.assert_array_equal(codes, expected)  # float32 survives the CSV exactly


def test_reconstruct_keeps_names_units_and_npy_shape(
    tmp_path: Path, basic_model: Path, digits: np.ndarray
) -> None:
    np.save(tmp_path / "d.npy", digits[:30].reshape(30, 8, 8))
    out = tmp_path / "r.npy"
    assert invoke(["reconstruct", basic_model, tmp_path / "d.npy", "-o", out]).code == 0
    recon = np.load(out)
    assert recon.shape == (30, 8, 8)
    assert 0 < recon.mean() < 16  # original pixel units, not scaled [0, 1]
    header, _ = parse_csv(invoke(["reconstruct", basic_model, tmp_path / "d.npy"]).stdout)
    assert header == [f"p{i}" for i in range(64)]


def test_vae_encode_gives_the_mean_and_sample_is_seeded(
    tmp_path: Path, vae_model: Path, digits_csv: Path
) -> None:
    first = invoke(["encode", vae_model, digits_csv]).stdout
    assert first == invoke(["encode", vae_model, digits_csv]).stdout  # the mean, no sampling
    a = invoke(["sample", vae_model, "-n", "5", "--seed", "1"])
    b = invoke(["sample", vae_model, "-n", "5", "--seed", "1"])
    c = invoke(["sample", vae_model, "-n", "5", "--seed", "2"])
    assert a.code == 0 and a.stdout == b.stdout != c.stdout
    header, rows = parse_csv(a.stdout)
    assert rows.shape == (5, 64) and header[0] == "p0"
    assert rows.min() >= 0 and rows.max() <= 16  # bce outputs mapped back to pixel units
    out = tmp_path / "s.npy"
    assert invoke(["sample", vae_model, "-n", "3", "-o", out]).code == 0
    assert np.load(out).shape == (3, 64)


def test_sample_needs_a_vae(basic_model: Path) -> None:
    result = invoke(["sample", basic_model, "-n", "2"])
    assert result.code == 2
    assert "kind 'basic'" in result.stderr and "vae" in result.stderr
    assert result.stdout == b""


def test_info_text_and_json(basic_model: Path) -> None:
    text = invoke(["info", basic_model])
    assert text.code == 0
    assert "64-32-8-32-64" in text.text and "basic" in text.text and "p63" in text.text
    report = json.loads(invoke(["info", basic_model, "--json"]).stdout)
    assert report["kind"] == "basic" and report["summary"]["epochs"] == 3


def test_example_writes_the_shipped_digits(tmp_path: Path) -> None:
    result = invoke(["example", "digits"])
    header, rows = parse_csv(result.stdout)
    assert rows.shape == (1797, 64) and header[0] == "p0"
    assert invoke(["example", "digits", "-o", tmp_path / "d.npy"]).code == 0
    assert np.load(tmp_path / "d.npy").shape == (1797, 8, 8)


def test_stdin_csv_trains(tmp_path: Path, digits_csv: Path) -> None:
    path = tmp_path / "m.safetensors"
    result = invoke(["train", "-", "-o", path, *FAST], input=digits_csv.read_bytes())
    assert result.code == 0, result.stderr
    assert modelfile.load(str(path)).columns == [f"p{i}" for i in range(64)]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--epochs", "0"], "--epochs"),
        (["--kind", "nope"], "--kind"),
        (["--latent", "100"], "--latent"),
        (["--hidden", "3,x"], "--hidden"),
        (["--dropout", "1.5", "--kind", "denoise", "--noise", "dropout"], "--dropout"),
        (["--sparsity-target", "0"], "--sparsity-target"),
        (["--device", "cuda:7"], "--device"),
        (["--device", "tpu"], "--device"),
        (["--val-fraction", "1"], "--val-fraction"),
        (["--loss", "bce", "--scale", "standard"], "--loss bce"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path, digits_csv: Path, args: list[str], flag: str
) -> None:
    out = tmp_path / "m.safetensors"
    result = invoke(["train", digits_csv, "-o", out, *FAST, *args])
    assert result.code == 2, result.stderr
    assert flag in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not out.exists()


def test_unknown_kind_lists_the_valid_ones(tmp_path: Path, digits_csv: Path) -> None:
    result = invoke(["train", digits_csv, "-o", tmp_path / "m.safetensors", "--kind", "nope"])
    assert "basic" in result.stderr and "vae" in result.stderr


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["train", "{missing}", "-o", "{out}"], "missing.csv: no such file"),
        (["encode", "{model}", "{bad}"], "bad.csv:3:2: 'x' is not a number"),
        (["encode", "{model}", "{narrow}"], "input has 2 features, the model expects 64"),
        (["encode", "{junk}", "{narrow}"], "not a safetensors model file"),
        (["info", "{missing}"], "no such model file"),
    ],
)
def test_data_errors_exit_1_with_one_line(
    tmp_path: Path, basic_model: Path, command: list[str], message: str
) -> None:
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,x\n")
    (tmp_path / "narrow.csv").write_text("a,b\n1,2\n")
    (tmp_path / "junk.safetensors").write_bytes(b"not a model at all")
    names = {
        "missing": tmp_path / "missing.csv",
        "out": tmp_path / "out.safetensors",
        "model": basic_model,
        "bad": tmp_path / "bad.csv",
        "narrow": tmp_path / "narrow.csv",
        "junk": tmp_path / "junk.safetensors",
    }
    result = invoke([part.format(**names) for part in command])
    assert result.code == 1
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_output_never_overwrites_an_input(
    tmp_path: Path, basic_model: Path, digits_csv: Path
) -> None:
    copy = tmp_path / "d.csv"
    copy.write_bytes(digits_csv.read_bytes())
    before = copy.read_bytes()
    assert invoke(["train", copy, "-o", copy, *FAST]).code == 2
    assert invoke(["reconstruct", basic_model, copy, "-o", copy]).code == 2
    model_bytes = basic_model.read_bytes()
    assert invoke(["encode", basic_model, copy, "-o", basic_model]).code == 2
    assert copy.read_bytes() == before and basic_model.read_bytes() == model_bytes


def test_model_to_stdout_only_when_not_a_terminal(tmp_path: Path, digits_csv: Path) -> None:
    result = invoke(["train", digits_csv, "-o", "-", *FAST])
    assert result.code == 0
    path = tmp_path / "m.safetensors"
    path.write_bytes(result.stdout)
    assert modelfile.load(str(path)).config.kind == "basic"


@pytest.mark.parametrize(
    "flags",
    [
        ["--kind", "denoise", "--noise-std", "inf"],  # F22
        ["--kind", "vae", "--beta", "inf"],  # F22
        ["--weight-decay", "inf"],  # F22
        ["--kind", "sparse", "--sparsity-weight", "inf"],  # F22
        ["--seed", "-1"],  # F15
        ["--seed", str(2**64)],  # F15
        ["--threads", str(2**63)],  # F15
        ["--delimiter", ""],  # F13
        ["--delimiter", ";;"],  # F13
    ],
)
def test_bad_flag_values_are_usage_errors_naming_the_flag(
    tmp_path: Path, table_csv: Path, flags: list[str]
) -> None:
    out = tmp_path / "m.safetensors"
    result = invoke(["train", table_csv, "-o", out, "--epochs", "1", "-q", *flags])
    assert result.code == 2, result.stderr
    assert result.stderr.startswith(f"aecli: error: {flags[-2]}") and not out.exists()
    assert len(result.stderr.strip().splitlines()) == 1


def test_typed_backslash_t_delimiter_is_a_tab_f13(tmp_path: Path, table: np.ndarray) -> None:
    data = tmp_path / "t.dat"
    np.savetxt(data, table, delimiter="\t", fmt="%.6f")
    model = tmp_path / "m.safetensors"
    result = invoke(["train", data, "--delimiter", "\\t", "-o", model, "--epochs", "1", "-q"])
    assert result.code == 0, result.stderr


def test_nan_threshold_and_bad_sample_seed_are_usage_errors_f26_f15(
    basic_model: Path, vae_model: Path, digits_csv: Path
) -> None:
    result = invoke(["score", basic_model, digits_csv, "--threshold", "nan"])
    assert result.code == 2 and "--threshold" in result.stderr
    result = invoke(["sample", vae_model, "-n", "2", "--seed", "-1"])
    assert result.code == 2 and "--seed" in result.stderr


def test_train_help_is_in_sections_without_type_noise() -> None:
    """Issue 10: 34 options grouped so a person can scan them; no <str> or {DATA}."""
    text = invoke(["train", "--help"]).text
    titles = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert titles[-6:] == ["Output:", "Model:", "Training:", "Data:", "Runtime:", "Other options:"]
    assert "<" not in text and "{" not in text
    for command in ("encode", "score", "export", "sample"):
        assert "<str>" not in invoke([command, "--help"]).text


@pytest.mark.parametrize(
    ("flags", "flag"),
    [(["--hidden", "1000000000"], "--hidden"), (["--kind", "sparse", "--latent", "1000000000"],
                                                "--latent")],
)  # fmt: skip
def test_a_model_too_large_to_allocate_is_a_usage_error(
    tmp_path: Path, table_csv: Path, flags: list[str], flag: str
) -> None:
    """F15: these were allocation failures after reading the data, exit 70."""
    result = invoke(["train", table_csv, "-o", tmp_path / "m.safetensors", *flags])
    assert result.code == 2 and result.stderr.startswith(f"aecli: error: {flag}: a model of ")
