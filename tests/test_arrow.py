"""Parquet and Arrow in and out: the same model and codes as CSV, streamed, bad files named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
feather = pytest.importorskip("pyarrow.feather")

from aecli.io import iter_table, read_table  # noqa: E402
from tests.conftest import invoke  # noqa: E402


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(600, 5)).astype(np.float32)


def _table(rows: np.ndarray) -> object:
    columns = {f"f{i}": rows[:, i] for i in range(rows.shape[1])}
    return pa.table({"key": pa.array([f"k{i}" for i in range(len(rows))]), **columns})


def test_parquet_and_arrow_give_the_csv_routes_model_and_codes(
    tmp_path: Path, rows: np.ndarray
) -> None:
    """The issue's Done-when: train on t.parquet, encode to codes.parquet, equal to CSV's."""
    table = _table(rows)
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=128)
    feather.write_feather(table, tmp_path / "t.arrow")
    header = ",".join(["key", *(f"f{i}" for i in range(rows.shape[1]))])
    lines = [f"k{i}," + ",".join(map(str, row)) for i, row in enumerate(rows)]
    (tmp_path / "t.csv").write_text(header + "\n" + "\n".join(lines) + "\n")
    codes = {}
    for name in ("t.csv", "t.parquet", "t.arrow"):
        model = tmp_path / f"{name}.safetensors"
        flags = ["--epochs", "2", "-q", "--id-column", "key"]
        assert invoke(["train", tmp_path / name, "-o", model, *flags]).code == 0
        out = tmp_path / f"codes-{name}.parquet"
        result = invoke(["encode", model, tmp_path / name, "-o", out])
        assert result.code == 0, result.stderr
        codes[name] = pq.read_table(out)
    assert codes["t.parquet"].equals(codes["t.csv"]) and codes["t.arrow"].equals(codes["t.csv"])
    written = codes["t.parquet"]
    assert (
        written.column_names == ["key", "z0", "z1", "z2", "z3"]
        and written.schema.field("z0").type == pa.float32()
    )
    assert written.column("key").to_pylist()[:2] == ["k0", "k1"]


def test_the_id_column_keeps_its_type_and_arrow_out_is_typed(
    tmp_path: Path, rows: np.ndarray
) -> None:
    ids = pa.array(np.arange(len(rows), dtype=np.int32) * 10)
    pq.write_table(pa.table({"n": ids, "a": rows[:, 0], "b": rows[:, 1]}), tmp_path / "t.parquet")
    model = tmp_path / "m.safetensors"
    args = ["train", tmp_path / "t.parquet", "-o", model, "--epochs", "1", "-q", "--id-column", "n"]
    assert invoke(args).code == 0
    out = tmp_path / "scores.arrow"
    assert invoke(["score", model, tmp_path / "t.parquet", "-o", out]).code == 0
    back = pa.ipc.open_file(pa.memory_map(str(out))).read_all()
    assert back.column_names == ["n", "score"] and back.column("n").to_pylist()[:2] == [0, 10]
    text = invoke(["encode", model, tmp_path / "t.parquet"]).text.splitlines()
    assert text[0] == "n,z0" and text[2].startswith("10,")


def test_integer_decimal_and_bool_columns_are_numbers(tmp_path: Path) -> None:
    from decimal import Decimal

    table = pa.table({
        "i": pa.array([1, 2, 3], pa.int64()),
        "d": pa.array([Decimal("1.5"), Decimal("2.25"), Decimal("-3")], pa.decimal128(6, 2)),
        "b": pa.array([True, False, True]),
    })  # fmt: skip
    pq.write_table(table, tmp_path / "t.parquet")
    values = read_table(str(tmp_path / "t.parquet")).values
    np.testing.assert_array_equal(values, [[1, 1.5, 1], [2, 2.25, 0], [3, -3, 1]])


def test_a_large_parquet_is_read_a_batch_at_a_time(tmp_path: Path) -> None:
    rows = np.random.default_rng(1).normal(size=(50_000, 4)).astype(np.float32)
    pq.write_table(pa.table({f"c{i}": rows[:, i] for i in range(4)}), tmp_path / "t.parquet",
                   row_group_size=10_000)  # fmt: skip
    chunks = list(iter_table(str(tmp_path / "t.parquet"), chunk_rows=4096))
    assert max(len(c.values) for c in chunks) == 4096
    np.testing.assert_array_equal(np.concatenate([c.values for c in chunks]), rows)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: pa.table({"a": pa.array([1.0, None, 3.0]), "b": [1.0, 2.0, 3.0]}),
         "a null (missing) value at row 1, column 'a'"),
        (lambda: pa.table({"a": [1.0, 2.0], "s": ["x", "y"]}),
         "column 's' holds string, not numbers"),
        (lambda: pa.table({"a": [1.0, 2.0], "l": pa.array([[1], [2]])}),
         "column 'l' holds list<element: int64>, not numbers"),
        (lambda: pa.table({"a": [1.0, float("inf")]}), "inf at row 1, column 'a'"),
    ],
)  # fmt: skip
def test_bad_parquet_is_one_line_naming_the_place(tmp_path: Path, make: object, says: str) -> None:
    pq.write_table(make(), tmp_path / "bad.parquet")  # type: ignore[operator]
    out = tmp_path / "m.safetensors"
    result = invoke(["train", tmp_path / "bad.parquet", "-o", out, "-q", "--epochs", "1"])
    assert result.code == 1 and not out.exists()
    assert result.stderr == f"aecli: error: {tmp_path / 'bad.parquet'}: {says}" + (
        " (--allow-nan drops such rows)\n" if "row" in says else
        f" (carry text with --id-column {says[8]}, or leave it out with --exclude {says[8]})\n"
    )  # fmt: skip


def test_nulls_are_dropped_with_allow_nan(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": pa.array([1.0, None, 3.0, 4.0]), "b": [1.0, 2.0, 3.0, 5.0]}),
                   tmp_path / "t.parquet")  # fmt: skip
    table = read_table(str(tmp_path / "t.parquet"), allow_nan=True)
    np.testing.assert_array_equal(table.values, [[1, 1], [3, 3], [4, 5]])


def test_a_truncated_or_foreign_file_and_a_missing_column(tmp_path: Path, rows: np.ndarray) -> None:
    pq.write_table(_table(rows), tmp_path / "t.parquet")
    whole = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(whole[: len(whole) // 2])
    model = tmp_path / "m.safetensors"
    cut = invoke(["train", tmp_path / "cut.parquet", "-o", model, "-q"])
    assert cut.code == 1 and "not a readable Parquet file" in cut.stderr and not model.exists()
    assert len(cut.stderr.splitlines()) == 1
    args = ["train", tmp_path / "t.parquet", "-o", model, "-q", "--epochs", "1", "--id-column",
            "key"]  # fmt: skip
    assert invoke(args).code == 0
    pq.write_table(_table(rows).drop_columns(["f3"]), tmp_path / "fewer.parquet")
    out = tmp_path / "codes.parquet"
    missing = invoke(["encode", model, tmp_path / "fewer.parquet", "-o", out])
    assert missing.code == 1 and not out.exists(), missing.stderr
    assert len(missing.stderr.splitlines()) == 1


def test_an_arrow_stream_on_stdin(tmp_path: Path, rows: np.ndarray) -> None:
    table = _table(rows)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    stream = sink.getvalue().to_pybytes()
    model = tmp_path / "m.safetensors"
    trained = invoke(["train", "-", "-o", model, "-q", "--epochs", "1", "--id-column", "key"],
                     input=stream)  # fmt: skip
    assert trained.code == 0, trained.stderr
    piped = invoke(["encode", model, "-"], input=stream)
    assert piped.code == 0 and piped.text.splitlines()[1].startswith("k0,")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_encode_of_a_parquet_keeps_memory_flat(tmp_path: Path) -> None:
    """10x the rows cost little more memory: the file is read a batch at a time."""
    rng = np.random.default_rng(0)
    model = tmp_path / "m.safetensors"
    small = rng.normal(size=(2000, 16)).astype(np.float32)
    pq.write_table(pa.table({f"c{i}": small[:, i] for i in range(16)}), tmp_path / "small.parquet")
    assert (
        invoke(["train", tmp_path / "small.parquet", "-o", model, "-q", "--epochs", "1"]).code == 0
    )
    peaks = []
    for n in (40_000, 400_000):  # 2.6 and 26 MB of values
        big = rng.normal(size=(n, 16)).astype(np.float32)
        path = tmp_path / f"{n}.parquet"
        pq.write_table(pa.table({f"c{i}": big[:, i] for i in range(16)}), path,
                       row_group_size=20_000)  # fmt: skip
        out = tmp_path / "c.npy"
        script = (  # VmHWM: this process's peak (ru_maxrss keeps the forking parent's)
            "import sys; from aecli.cli import main; "
            f"code = main(['encode', {str(model)!r}, {str(path)!r}, '-o', {str(out)!r}]); "
            "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
            "sys.stderr.write(peak.split()[1]); sys.exit(code)"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        peaks.append(int(done.stderr.strip().splitlines()[-1]))
    assert peaks[1] - peaks[0] < 15_000, peaks  # KiB: 23 MB more values, under 15 MB more memory


def test_the_estimator_fits_a_parquet_path_or_an_arrow_table(
    tmp_path: Path, rows: np.ndarray
) -> None:
    pytest.importorskip("sklearn")
    from aecli import Autoencoder

    table = pa.table({f"f{i}": rows[:, i] for i in range(rows.shape[1])})
    pq.write_table(table, tmp_path / "t.parquet")
    from_path = Autoencoder(epochs=1, seed=0).fit(tmp_path / "t.parquet")
    from_table = Autoencoder(epochs=1, seed=0).fit(table)
    assert list(from_path.feature_names_in_) == [f"f{i}" for i in range(rows.shape[1])]
    np.testing.assert_array_equal(from_path.transform(table), from_table.transform(table))


def test_a_parquet_file_streams_to_the_model_a_loaded_table_trains(
    tmp_path: Path, rows: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training reads a large Parquet file by row range, as a .npy: the same steps as loaded."""
    from safetensors.numpy import load_file

    from aecli.io import stream

    table = _table(rows)
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=100)
    flags = ["--epochs", "2", "-q", "--chunk-rows", "150", "--id-column", "key", "--allow-nan"]
    csv = tmp_path / "t.csv"
    csv.write_text(table.to_pandas().to_csv(index=False))  # read whole, held in memory
    loaded, streamed = tmp_path / "loaded.safetensors", tmp_path / "streamed.safetensors"
    assert invoke(["train", csv, "-o", loaded, *flags]).code == 0
    result = invoke(["train", tmp_path / "t.parquet", "-o", streamed, *flags])  # streams
    assert result.code == 0, result.stderr
    a, b = load_file(str(loaded)), load_file(str(streamed))
    for key in a:
        if key.startswith(("model.", "optim.")):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    monkeypatch.setattr(stream, "_available_memory", lambda: 1000)
    assert stream.should_stream(str(tmp_path / "t.parquet"), 0)  # too big: streamed unasked
