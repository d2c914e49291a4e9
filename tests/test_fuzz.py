"""Property tests: random and mutated inputs give a result or a one-line error, never a crash.

Every reader failure must be a DataError (exit 1 with a located message) and
every model-file failure a ModelFileError; anything else escaping is a bug.
"""

from __future__ import annotations

import io
import json
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aecli import modelfile
from aecli.errors import DataError, ModelFileError
from aecli.io import read_table
from tests.conftest import invoke

FUZZ = settings(
    max_examples=150,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

VALID_CSV = b'id,a,b\n"x, 1",1.5,-2\ny,3e2,4\nz,5,6.25\n'


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


VALID_NPY = _npy_bytes(np.arange(24, dtype=np.float32).reshape(4, 2, 3))


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """Up to 8 edits: replace, insert or delete a byte, or truncate."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "replace" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data.insert(at, draw(st.sampled_from(b'\x00,"\n\r\t;e.-+9 \xff\xef')))
        elif op == "delete" and data:
            del data[at]
        elif op == "truncate":
            del data[at:]
    return bytes(data)


def _read(data: bytes, suffix: str, **options: object) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            table = read_table(str(path), **options)
        except DataError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path))
            return
        assert table.values.dtype == np.float32 and table.values.ndim == 2
        assert np.isfinite(table.values).all()
        assert table.values.shape[0] >= 1


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_as_csv(data: bytes) -> None:
    _read(data, ".csv")


@FUZZ
@given(mutated(VALID_CSV), st.booleans())
def test_mutated_csv(data: bytes, allow_nan: bool) -> None:
    _read(data, ".csv", id_column="id", allow_nan=allow_nan)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_as_gzip_csv(data: bytes) -> None:
    _read(b"\x1f\x8b" + data, ".csv.gz")


@FUZZ
@given(st.one_of(st.binary(max_size=200), mutated(VALID_NPY)))
def test_random_and_mutated_npy(data: bytes) -> None:
    _read(data, ".npy")


@pytest.fixture(scope="module")
def model_bytes(basic_model: Path) -> bytes:
    return basic_model.read_bytes()


def _load(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.safetensors"
        path.write_bytes(data)
        try:
            fitted = modelfile.load(str(path))
        except ModelFileError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path))
            return
        fitted.encode(np.zeros((1, fitted.config.n_inputs), dtype=np.float32))


@FUZZ
@given(data=st.data())
def test_mutated_model_files(model_bytes: bytes, data: st.DataObject) -> None:
    (size,) = struct.unpack("<Q", model_bytes[:8])
    # Most edits land in the header, where the structure is.
    header = model_bytes[: 8 + size]
    edited = data.draw(mutated(header)) + model_bytes[8 + size :]
    _load(edited)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@FUZZ
@given(data=st.data())
def test_model_metadata_with_wrong_values(model_bytes: bytes, data: st.DataObject) -> None:
    """Well-formed files whose aecli metadata holds unexpected values."""
    metadata, tensors, size = modelfile.read_header_bytes(model_bytes)
    key = data.draw(st.sampled_from(sorted(metadata)))
    decoded = json.loads(metadata[key]) if key != "aecli.format" else metadata[key]
    if isinstance(decoded, dict) and decoded:
        field = data.draw(st.sampled_from(sorted(decoded)))
        decoded[field] = data.draw(JSONISH)
        metadata[key] = json.dumps(decoded)
    else:
        metadata[key] = json.dumps(data.draw(JSONISH))
    body = model_bytes[8 + size :]
    header = {"__metadata__": metadata, **tensors}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    _load(struct.pack("<Q", len(text)) + text + body)


@settings(max_examples=40, deadline=4000, suppress_health_check=list(HealthCheck))
@given(data=mutated(b"a,b\n1,2\n3,4\n"))
def test_cli_never_shows_a_traceback(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    folder = tmp_path_factory.mktemp("cli")
    (folder / "in.csv").write_bytes(data)
    result = invoke(
        ["train", folder / "in.csv", "-o", folder / "m.safetensors", "--epochs", "1", "-q"]
    )
    assert result.code in (0, 1, 2)
    if result.code:
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@FUZZ
@given(
    st.integers(1, 6).flatmap(
        lambda width: st.lists(
            st.lists(
                st.floats(width=32, allow_nan=False, allow_infinity=False),
                min_size=width,
                max_size=width,
            ),
            min_size=1,
            max_size=40,
        )
    ),
    st.booleans(),
    st.sampled_from(["\n", "\r\n"]),
)
def test_fast_and_exact_csv_paths_agree(
    rows: list[list[float]], header: bool, newline: str
) -> None:
    """pandas' parser (clean chunks) and the csv-module path give the same float32 table."""
    from aecli.io import read as aio  # where the fast parser is looked up

    values = np.array(rows, dtype=np.float32)
    text = "".join(",".join(map(str, row)) + newline for row in values)
    if header:
        text = ",".join(f"c{i}" for i in range(values.shape[1])) + newline + text
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.csv"
        path.write_text(text, newline="")
        fast = read_table(str(path), header=header, chunk_rows=7)
        real = aio.lazy_pandas
        try:
            aio.lazy_pandas = lambda: None  # type: ignore[assignment]
            exact = read_table(str(path), header=header, chunk_rows=7)
        finally:
            aio.lazy_pandas = real  # type: ignore[assignment]
    np.testing.assert_array_equal(fast.values, values)
    np.testing.assert_array_equal(exact.values, values)
    assert fast.columns == exact.columns


@pytest.mark.parametrize("step", [float("inf"), -3, 2.5, "7"])
def test_a_damaged_optimizer_step_is_a_model_file_error(model_bytes: bytes, step: object) -> None:
    """Found by the metadata fuzzer: a step of inf raised OverflowError."""
    metadata, tensors, size = modelfile.read_header_bytes(model_bytes)
    metadata["aecli.optim"] = json.dumps({"step": step})
    text = json.dumps({"__metadata__": metadata, **tensors}).encode()
    text += b" " * (-len(text) % 8)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.safetensors"
        path.write_bytes(struct.pack("<Q", len(text)) + text + model_bytes[8 + size :])
        with pytest.raises(ModelFileError, match="bad optimizer step count"):
            modelfile.load(str(path))


# -- every command, every flag ----------------------------------------------------------
TOKENS = [
    "", "0", "1", "3", "-1", "2.5", "1e-3", "nan", "inf", "-inf", "1e309", "99999999999999999999",
    "abc", "1,2", "0,4", "a,b", "none", "auto", "-", "8x8", "2x4x8", "0x8", "cuda", "cpu",
    "cuda:7", "bf16", "p0", "z9", "out.csv", "out.npy", "out.png", "dir/x.csv",
]  # fmt: skip


def _command_options() -> dict[str, list[tuple[str, bool]]]:
    """Each command's flags (its first spelling) and whether each is a switch."""
    import typer

    from aecli.cli import app

    group = typer.main.get_command(app)
    options = {}
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        flags = []
        for param in command.params:
            # --compile takes no value to fuzz, and each draw runs torch.compile: 15 s or
            # more a shape where a compiler is installed (one suite run took 11 minutes and
            # lost a worker); tests/test_train.py runs it on purpose.
            if param.param_type_name == "option" and not {"--help", "--compile"} & set(param.opts):
                flags.append((param.opts[0], bool(getattr(param, "is_flag", False))))
        options[name] = flags
    return options


OPTIONS = _command_options()
ENDLESS = "99999999999999999999"


def _tokens(command: str, flag: str) -> list[str]:
    """The values to draw for one flag.

    ``sample -n 99999999999999999999`` is a valid, endless stream: in a captured stdout it
    held 9 GB within four minutes (and once lost an xdist worker to the OOM killer);
    tests/test_pipes.py checks that a huge -n streams into head.
    """
    return [t for t in TOKENS if t != ENDLESS] if (command, flag) == ("sample", "-n") else TOKENS


RUNS = {  # positional arguments that work, so that the flags are what is tested
    "train": ["{data}"],
    "encode": ["{model}", "{data}"],
    "reconstruct": ["{model}", "{data}"],
    "sample": ["{vae}"],
    "features": ["{model}"],
    "interpolate": ["{model}", "{data}"],
    "evaluate": ["{model}", "{data}"],
    "score": ["{model}", "{data}"],
    "info": ["{model}"],
    "export": ["{model}"],
    "example": ["digits"],
    "curves": ["{log}"],
}


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory: pytest.TempPathFactory, digits_csv: Path) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("flags")
    files = {"data": str(digits_csv), "log": str(folder / "log.jsonl")}
    for name, extra in (("model", ["--log", files["log"]]), ("vae", ["--kind", "vae"])):
        files[name] = str(folder / f"{name}.safetensors")
        args = ["train", digits_csv, "-o", files[name], "--epochs", "2", "-q", *extra]
        assert invoke(args).code == 0
    return files


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_flag_value_is_a_result_or_one_line(
    cli_files: dict[str, str], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Every command with random values for random flags: exit 0, 1 or 2, one line, no crash.

    Runs in a scratch folder (flags may name outputs). Training is kept short by the
    values on offer (at most 3 epochs, layers of at most 3 units).
    """
    import os

    command = data.draw(st.sampled_from(sorted(RUNS)))
    args = [command, *(a.format(**cli_files) for a in RUNS[command])]
    for flag, switch in data.draw(st.lists(st.sampled_from(OPTIONS[command]), max_size=4)):
        args += [flag] if switch else [flag, data.draw(st.sampled_from(_tokens(command, flag)))]
    if command == "train" and "-o" not in args and "--output" not in args:
        args += ["-o", "m.safetensors"]
    if command in ("features", "export") and not {"-o", "--grid"} & set(args):
        args += ["--grid" if command == "features" else "-o", "x.out"]
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("run"))
    try:
        result = invoke([*args, "--epochs", "1"] if command == "train" else args)
    finally:
        os.chdir(here)
    assert result.code in (0, 1, 2), (args, result.code, result.stderr)
    if result.code:
        assert result.stderr.count("\n") == 1, (args, result.stderr)
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr, args


@FUZZ
@given(data=st.data())
def test_model_tensors_with_hand_edited_values(model_bytes: bytes, data: st.DataObject) -> None:
    """Tensors edited in place (NaN, inf, huge, reversed, zero): a result or a damaged file."""
    _, tensors, size = modelfile.read_header_bytes(model_bytes)
    name = data.draw(st.sampled_from(sorted(k for k, v in tensors.items() if v["dtype"] == "F32")))
    start, end = tensors[name]["data_offsets"]
    body = bytearray(model_bytes[8 + size :])
    values = np.frombuffer(bytes(body[start:end]), dtype=np.float32).copy()
    edit = data.draw(st.sampled_from(["one", "reverse", "zero", "scale"]))
    if edit == "one":
        at = data.draw(st.integers(0, len(values) - 1))
        values[at] = data.draw(st.floats(width=32) | st.sampled_from([np.nan, np.inf, -np.inf]))
    elif edit == "reverse":
        values = values[::-1].copy()
    elif edit == "zero":
        values[:] = 0
    else:
        values *= data.draw(st.sampled_from([-1.0, 1e30, 1e-30]))
    body[start:end] = values.tobytes()
    _load(model_bytes[: 8 + size] + bytes(body))


ESTIMATOR_ARGUMENTS = sorted(
    ["kind", "hidden", "latent", "tied", "activation", "loss", "noise", "noise_std", "dropout",
     "sparsity_target", "sparsity_weight", "beta", "scale", "epochs", "batch_size", "lr",
     "weight_decay", "val_fraction", "early_stopping", "seed", "precision", "threads",
     "beta_warmup", "finetune_epochs", "contamination"]
)  # fmt: skip


def _capped(value: object, most: int) -> object:
    """``value`` with every integer in it (itself, or a list's) at most ``most``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return min(value, most)
    if isinstance(value, list):
        return [_capped(each, most) for each in value]
    return value


@settings(max_examples=80, deadline=4000, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(ESTIMATOR_ARGUMENTS), JSONISH)
def test_estimator_arguments_are_a_result_or_a_value_error(name: str, value: object) -> None:
    """Any value of any argument: a fitted model, or a ValueError naming the argument."""
    pytest.importorskip("sklearn")
    from aecli import Autoencoder

    rows = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    arguments = {"epochs": 1, "batch_size": 16, name: value}
    if name == "epochs" and isinstance(value, int) and not isinstance(value, bool):
        arguments["epochs"] = min(max(value, -1), 2)  # a huge count is valid, and slow
    if name == "batch_size" and isinstance(value, int) and not isinstance(value, bool):
        arguments["batch_size"] = min(max(value, -1), 64)
    if name in ("hidden", "latent"):  # a layer of 300,000 units is valid, and takes seconds
        arguments[name] = _capped(value, 64)
    try:
        with warnings.catch_warnings():  # an lr or a decay that diverges: a result, with advice
            warnings.filterwarnings("ignore", "training diverged", RuntimeWarning)
            Autoencoder(**arguments).fit(rows)
    except ValueError as exc:
        assert "\n" not in str(exc), exc


def test_the_flag_fuzzer_leaves_out_compile_and_help() -> None:
    """--compile was once left in by its parameter's name (compile_model) and lost a worker."""
    assert all(flag not in ("--compile", "--help") for flag, _ in OPTIONS["train"])
    assert "--epochs" in dict(OPTIONS["train"])
