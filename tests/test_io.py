"""Reading and writing tables: formats, headers, shapes, exact floats, located errors."""

from __future__ import annotations

import gzip
import io
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from aecli.errors import DataError, UsageError
from aecli.io import TableWriter, iter_table, read_table


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_header_is_detected_and_kept(tmp_path: Path) -> None:
    table = read_table(write(tmp_path / "a.csv", "a,b\n1,2\n3,4\n"))
    assert table.columns == ["a", "b"]
    assert table.values.tolist() == [[1, 2], [3, 4]]
    assert table.values.dtype == np.float32


def test_all_numbers_first_row_is_data(tmp_path: Path) -> None:
    table = read_table(write(tmp_path / "a.csv", "1,2\n3,4\n"))
    assert table.columns is None
    assert table.values.shape == (2, 2)


def test_header_flags_override_detection(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "1,2\n3,4\n")
    assert read_table(path, header=True).columns == ["1", "2"]
    with pytest.raises(DataError, match=r"b.csv:1:1: .a. is not a number"):
        read_table(write(tmp_path / "b.csv", "a,b\n1,2\n"), header=False)


def test_tsv_gz_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "a.tsv.gz"
    path.write_bytes(gzip.compress("\ufeffx\ty\r\n1\t2\r\n3\t4\r\n".encode()))
    table = read_table(str(path))
    assert table.columns == ["x", "y"]
    assert table.values.tolist() == [[1, 2], [3, 4]]


def test_npy_keeps_the_row_shape(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    np.save(tmp_path / "a.npy", array)
    table = read_table(str(tmp_path / "a.npy"))
    assert table.row_shape == (3, 4)
    assert table.values.shape == (2, 12)
    np.testing.assert_array_equal(table.values, array.reshape(2, 12))


def test_chunks_cover_all_rows_in_order(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{-i}" for i in range(10)) + "\n"
    chunks = list(iter_table(write(tmp_path / "a.csv", rows), chunk_rows=3))
    assert [len(c.values) for c in chunks] == [3, 3, 3, 1]
    assert np.concatenate([c.values for c in chunks])[:, 0].tolist() == list(range(10))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n1,2\n3\n", r"a.csv:3: expected 2 fields, found 1"),
        ("a,b\n1,2\n3,x\n", r"a.csv:3:2: 'x' is not a number \('b'\)"),
        ("a,b\n1,\n", r"a.csv:2:2: empty cell"),
        ("a,b\n1,nan\n", r"a.csv:2:2: 'nan' is not a finite number"),
        ("a,b\n1,1e39\n", r"a.csv:2:2: '1e39' overflows float32"),
        ("", r"a.csv: empty file"),
        ("a,b\n", r"a.csv: no data rows, only a header"),
        ('a,b\n1,"2\n', r"a.csv:2: malformed CSV \(a quote opened here is never closed\)"),
    ],
)
def test_bad_csv_is_located(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_table(write(tmp_path / "a.csv", text))


@pytest.mark.parametrize(
    ("cell", "texty"), [("1e39", False), ("-4E+50", False), ("inf", False), ("kiwi", True)]
)
def test_only_a_word_gets_the_text_column_hint(tmp_path: Path, cell: str, texty: bool) -> None:
    """An exponent's 'e' is no word: a too-large number is not called a column of ids."""
    with pytest.raises(DataError) as caught:
        read_table(write(tmp_path / "a.csv", f"a,b\n1,{cell}\n"))
    assert ("a column of text" in str(caught.value)) is texty


@pytest.mark.parametrize(("line", "found"), [("7,8,9", 3), ("7", 1), ("7,8,", 3)])
def test_a_ragged_line_deep_in_a_clean_chunk_is_found_by_its_number(
    tmp_path: Path, line: str, found: int
) -> None:
    """The fast path counts each line's fields from the chunk's bytes: one off line is seen."""
    rows = [f"{i},{i + 1}" for i in range(2000)]
    rows[1234] = line
    path = write(tmp_path / "a.csv", "a,b\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=rf"a.csv:1236: expected 2 fields, found {found}"):
        read_table(path)
    rows[1234] = "7,8"
    table = read_table(write(tmp_path / "b.csv", "a,b\n" + "\n".join(rows) + "\n"))
    assert table.values.shape == (2000, 2) and table.values[1234].tolist() == [7.0, 8.0]


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([1 + 2j, 3j]), "complex"),
        (np.array([True, False]), "bool"),
        (np.array(["a", "b"]), "<U1"),
        (np.array([{"a": 1}], dtype=object), "never unpickled"),
    ],
)
def test_bad_npy_is_refused(tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / "a.npy", array, allow_pickle=True)
    with pytest.raises(DataError, match=message):
        read_table(str(tmp_path / "a.npy"))


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown data format"):
        read_table(write(tmp_path / "a.dat", "1,2\n"))
    with pytest.raises(DataError, match="no such file"):
        read_table(str(tmp_path / "missing.csv"))


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(("1,2\n" * 1000).encode())
    (tmp_path / "a.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated"):
        read_table(str(tmp_path / "a.csv.gz"))


@pytest.mark.parametrize("kind", ["csv", "gz", "npy"])
def test_stdin_is_sniffed(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    csv_bytes = b"a,b\n1,2\n"
    if kind == "csv":
        payload = csv_bytes
    elif kind == "gz":
        payload = gzip.compress(csv_bytes)
    else:
        buffer = io.BytesIO()
        np.save(buffer, np.array([[1.0, 2.0]], dtype=np.float32))
        payload = buffer.getvalue()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(payload)))
    table = read_table("-")
    assert table.values.tolist() == [[1.0, 2.0]]


@pytest.mark.parametrize("name", ["out.csv", "out.tsv", "out.csv.gz", "out.npy"])
def test_written_floats_round_trip_exactly(tmp_path: Path, name: str) -> None:
    values = np.random.default_rng(0).standard_normal((50, 7)).astype(np.float32)
    values[0, 0] = np.float32(0.1)
    values[0, 1] = np.finfo(np.float32).tiny
    columns = [f"c{i}" for i in range(7)]
    with TableWriter(str(tmp_path / name), columns, (7,)) as writer:
        writer.write(values[:20])
        writer.write(values[20:])
    back = read_table(str(tmp_path / name))
    np.testing.assert_array_equal(back.values, values)
    if name != "out.npy":
        assert back.columns == columns


def test_npy_with_a_python2_header_reads_without_a_warning(tmp_path: Path) -> None:
    """numpy reads a header written by Python 2 (``4L``) but warns; aecli prints no raw warning."""
    values = np.arange(12, dtype="<f8").reshape(4, 3)
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (4L, 3L), }"
    header = header.ljust(117) + "\n"
    path = tmp_path / "py2.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                     + header.encode() + values.tobytes())  # fmt: skip
    with pytest.warns(UserWarning, match="Python 2"):
        np.load(path)  # numpy's own warning, so the file is the case it warns about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = read_table(path)
    np.testing.assert_array_equal(table.values, values)


def test_npy_output_takes_the_row_shape(tmp_path: Path) -> None:
    with TableWriter(str(tmp_path / "o.npy"), ["a"] * 4, (2, 2)) as writer:
        writer.write(np.ones((3, 4), dtype=np.float32))
    assert np.load(tmp_path / "o.npy").shape == (3, 2, 2)


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "o.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), TableWriter(str(target), ["a"], (1,)) as writer:
        writer.write(np.ones((2, 1), dtype=np.float32))
        raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.csv"]


def test_writer_refuses_to_overwrite_an_input(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "1\n")
    with pytest.raises(UsageError, match="input of this command"):
        TableWriter(source, ["a"], (1,), protect=[source])
    assert Path(source).read_text() == "1\n"


def test_npy_output_streams_chunks_into_one_array(tmp_path: Path) -> None:
    out = tmp_path / "o.npy"
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 6)).astype(np.float32) for n in (5, 0, 17, 1)]
    with TableWriter(str(out), [f"c{i}" for i in range(6)], (2, 3)) as writer:
        for part in parts:
            writer.write(part)
    loaded = np.load(out)
    assert loaded.shape == (23, 2, 3) and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded.reshape(23, 6), np.concatenate(parts))
    header_end = out.read_bytes().index(b"\n") + 1
    assert header_end % 64 == 0  # the format's alignment, whatever the row count


def test_a_full_disk_is_one_line_and_keeps_the_old_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table_csv: Path
) -> None:
    import errno

    from aecli import io as aio
    from tests.conftest import FAST, invoke

    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, *FAST]).code == 0
    before = model.read_bytes()

    def full(self: aio.AtomicFile) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", self.dest)

    monkeypatch.setattr(aio.AtomicFile, "commit", full)
    result = invoke(["train", table_csv, "-o", model, *FAST, "--seed", "1"])
    assert result.code == 1
    assert result.stderr == f"aecli: error: {model}: No space left on device\n"
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_outputs_follow_symlinks_and_stream_into_fifos(tmp_path: Path, basic_model: Path,
                                                         digits_csv: Path) -> None:  # fmt: skip
    """F02: a symlink's target is replaced (the link stays); a FIFO is written into."""
    import os
    import threading

    from tests.conftest import invoke

    target = tmp_path / "results" / "v3.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "latest.csv"
    link.symlink_to(target)
    assert invoke(["encode", basic_model, digits_csv, "-o", link]).code == 0
    assert link.is_symlink() and target.read_text().startswith("z0,")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    assert invoke(["encode", basic_model, digits_csv, "-o", fifo]).code == 0
    reader.join(10)
    assert got and got[0].startswith(b"z0,") and len(got[0].splitlines()) == 401
    assert fifo.is_fifo()  # still a FIFO, not replaced by a file


def test_bad_output_paths_fail_before_training(tmp_path: Path, table_csv: Path) -> None:
    """F03, F04, F06: --log checked like -o, before any epoch; long names fit."""
    from tests.conftest import invoke

    model = tmp_path / "m.safetensors"
    args = ["train", table_csv, "-o", model, "--epochs", "2", "-q"]
    for log, message in (
        (tmp_path / "nodir" / "log.jsonl", "--log: directory"),
        (tmp_path, "--log: .* is a directory"),
        (table_csv, "--log: .* is an input of this command"),
        (model, "--log: .* is an input of this command"),  # the same file as -o
    ):
        result = invoke([*args, "--log", log])
        assert result.code == 2 and re.search(message, result.stderr), result.stderr
        assert not model.exists()
    assert invoke(args).code == 0
    before = model.read_bytes()
    resumed = ["train", table_csv, "--resume", model, "-o", tmp_path / "n.safetensors"]
    result = invoke([*resumed, "--epochs", "4", "-q", "--log", model])  # F04
    assert result.code == 2 and "is an input" in result.stderr
    assert model.read_bytes() == before
    long = tmp_path / ("m" * 240 + ".safetensors")  # a legal name; the old temporary was not
    assert invoke(["train", table_csv, "-o", long, "--epochs", "2", "-q"]).code == 0
    assert long.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_flag_conflicts_are_usage_errors(tmp_path: Path, table_csv: Path) -> None:
    """F23: these were exit 1 as data errors, and .npy accepted a column named twice."""
    from tests.conftest import invoke

    npy = tmp_path / "t.npy"
    np.save(npy, read_table(str(table_csv)).values)
    out = tmp_path / "m.safetensors"
    for data, flags, message in (
        (table_csv, ["--columns", "0,1", "--id-column", "0"], "--id-column: '0' is also one"),
        (table_csv, ["--columns", "1,1"], "--columns: column '1' is named twice"),
        (npy, ["--columns", "0,0"], "--columns: column '0' is named twice"),
    ):
        result = invoke(["train", data, "-o", out, "--epochs", "1", *flags])
        assert result.code == 2 and message in result.stderr, result.stderr
    assert not out.exists()


def test_a_replaced_output_keeps_its_permissions(tmp_path: Path, table_csv: Path) -> None:
    """F28: a 600 model file became 644 when training replaced it."""
    from tests.conftest import invoke

    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--epochs", "1", "-q"]).code == 0
    model.chmod(0o600)
    assert invoke(["train", table_csv, "-o", model, "--epochs", "2", "-q"]).code == 0
    assert model.stat().st_mode & 0o777 == 0o600


def test_log_dash_is_stdout(tmp_path: Path, table_csv: Path) -> None:
    """F29: --log - made a file named '-'; now it is stdout, and refused beside -o -."""
    from tests.conftest import invoke

    result = invoke(["train", table_csv, "-o", tmp_path / "m.safetensors", "--epochs", "2",
                     "-q", "--log", "-"])  # fmt: skip
    assert result.code == 0
    assert [json.loads(line)["epoch"] for line in result.text.splitlines()] == [1, 2]
    both = invoke(["train", table_csv, "-o", "-", "--epochs", "1", "--log", "-"])
    assert both.code == 2 and "--log: the model already goes to stdout" in both.stderr


def test_a_bare_cr_is_refused_by_both_parsers(tmp_path: Path) -> None:
    """F08: pandas took a lone CR for a line end; the exact path refuses the cell."""
    path = tmp_path / "cr.csv"
    path.write_bytes(b"a\n1\n2\n3\r4\n   \n5\n6\n")
    with pytest.raises(DataError, match=r"cr.csv:4:1: '3\\r4' is not a number"):
        read_table(str(path))
    fine = tmp_path / "crlf.csv"
    fine.write_bytes(b"a\r\n1\r\n2\r\n")  # CRLF line ends stay fine
    assert read_table(str(fine)).values.ravel().tolist() == [1.0, 2.0]


def test_float32_max_is_not_blamed_for_another_cells_fault(tmp_path: Path) -> None:
    """F25: 3.4028235e+38 (float32 max, as aecli writes it) was called an overflow."""
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n3.4028235e+38,1\n1,2\n3,4\n5,abc\n")
    with pytest.raises(DataError, match=r"bad.csv:5:2: 'abc' is not a number"):
        read_table(str(bad))
    over = tmp_path / "over.csv"
    over.write_text("a,b\n3.5e+38,1\n1,2\n")
    with pytest.raises(DataError, match=r"over.csv:2:1: '3.5e\+38' overflows float32"):
        read_table(str(over))


def test_strays_of_dead_processes_are_removed_by_the_next_write(tmp_path: Path) -> None:
    """F27: kill -9 between link and rename leaves .aecli-PID-XXXXXXXX.tmp behind."""
    import os
    import subprocess

    from aecli.io import write_bytes_atomic

    child = subprocess.Popen(["true"])
    child.wait()  # a pid that has exited
    stray = tmp_path / f".aecli-{child.pid}-deadbeef.tmp"
    stray.write_bytes(b"half a model")
    alive = tmp_path / f".aecli-{os.getppid()}-cafebabe.tmp"  # a live process: kept
    alive.write_bytes(b"in use")
    write_bytes_atomic(str(tmp_path / "m.bin"), b"data")
    assert not stray.exists() and alive.exists()
    assert (tmp_path / "m.bin").read_bytes() == b"data"


class _CountingReader(io.RawIOBase):
    """A pipe-like stream that records how many bytes were taken from it."""

    def __init__(self, data: bytes) -> None:
        self.data, self.taken = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        size = min(len(buffer), len(self.data) - self.taken, 4096)  # short reads, as pipes give
        buffer[:size] = self.data[self.taken : self.taken + size]
        self.taken += size
        return size


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_npy_on_stdin_streams_in_chunks(
    monkeypatch: pytest.MonkeyPatch, order: str, version: tuple[int, int]
) -> None:
    """F10: a .npy on stdin was read whole; now one chunk at a time (Fortran order: whole)."""
    from numpy.lib import format as npy_format

    values = np.arange(3000 * 4, dtype=np.float64).reshape(3000, 2, 2)
    values = np.asfortranarray(values) if order == "F" else values
    buffer = io.BytesIO()
    npy_format.write_array(buffer, values, version=version)
    raw = _CountingReader(buffer.getvalue())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(raw)))
    chunks = iter_table("-", chunk_rows=500)
    first = next(chunks)
    assert first.values.shape == (500, 4) and first.row_shape == (2, 2)
    if order == "C":
        assert raw.taken < 500 * 4 * 8 + 3 * 4096  # not the 96 KB of the whole array
    rest = np.concatenate([first.values, *(c.values for c in chunks)])
    np.testing.assert_array_equal(rest, values.reshape(3000, 4).astype(np.float32))


def test_a_truncated_npy_on_stdin_is_a_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ones((100, 3), dtype=np.float32))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(buffer.getvalue()[:-10])))
    with pytest.raises(DataError, match=r"<stdin>: the \.npy data ends early"):
        read_table("-")


@pytest.mark.parametrize("suffix", [".csv", ".npy"])
def test_wide_rows_come_in_chunks_of_bounded_values(tmp_path: Path, suffix: str) -> None:
    """F09: chunks were 16,384 rows however wide; a 10,000-column CSV needed ~16 GB."""
    from aecli.io.table import CHUNK_VALUES

    width = 3000
    values = np.random.default_rng(0).random((1200, width)).astype(np.float32)
    path = tmp_path / f"wide{suffix}"
    if suffix == ".npy":
        np.save(path, values)
    else:
        np.savetxt(path, values, delimiter=",", fmt="%.4f")
    sizes = [c.values.shape[0] for c in iter_table(str(path))]
    assert sum(sizes) == 1200
    assert max(sizes) == CHUNK_VALUES // width


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([b"a,b", b"1,2", b"3,\xe9", b"5,6"], r"x.csv:3: not UTF-8 text \(byte 0xe9"),  # cp1252
        ([b"a,b", b"1,2", b'"3,4', b"5,6", b"7,8"], "x.csv:3: malformed CSV .a quote opened"),
        ([b"a,b", b'"1,2', b"5,6"], "x.csv:2: malformed CSV .a quote opened"),
    ],
)
def test_bad_bytes_and_open_quotes_name_their_line(
    tmp_path: Path, lines: list[bytes], message: str
) -> None:
    """F21: these named no line."""
    path = tmp_path / "x.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=message):
        read_table(str(path))


def test_a_long_quoted_field_is_valid_csv(tmp_path: Path) -> None:
    """F21: the csv module's 128 KiB field limit refused valid files."""
    path = tmp_path / "long.csv"
    path.write_text('id,a\n"' + "x" * 200_000 + '",1\nr1,2\n')
    table = read_table(str(path), id_column="id")
    assert table.values.tolist() == [[1.0], [2.0]] and len(table.ids[0]) == 200_000


def test_a_full_stdout_is_named(basic_model: Path, digits_csv: Path) -> None:
    """F21: "> /dev/full" said only "No space left on device"."""
    import subprocess

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    commands = [
        ["encode", basic_model, digits_csv],
        ["train", digits_csv, "-o", "-", "--epochs", "1", "--quiet"],
    ]
    for args in commands:
        with open("/dev/full", "wb") as full:
            done = subprocess.run(
                [sys.executable, "-m", "aecli", *map(str, args)],
                stdout=full,
                stderr=subprocess.PIPE,
            )
        assert done.returncode == 1
        assert done.stderr.decode().strip() == "aecli: error: stdout: No space left on device"


@pytest.mark.determinism
def test_a_fortran_order_npy_encodes_to_the_bytes_c_order_gives(tmp_path: Path) -> None:
    """F3-7: the same rows in Fortran order gave other codes (its blocks reached torch strided)."""
    from tests.conftest import invoke

    rows = np.random.default_rng(0).normal(size=(20_000, 8)).astype(np.float32)
    np.save(tmp_path / "c.npy", rows)
    np.save(tmp_path / "f.npy", np.asfortranarray(rows))
    model = tmp_path / "m.safetensors"
    assert invoke(["train", tmp_path / "c.npy", "-o", model, "--epochs", "1", "-q"]).code == 0
    for order in ("c", "f"):
        out = tmp_path / f"{order}-codes.npy"
        result = invoke(["encode", model, tmp_path / f"{order}.npy", "-o", out])
        assert result.code == 0, result.stderr
    assert (tmp_path / "c-codes.npy").read_bytes() == (tmp_path / "f-codes.npy").read_bytes()
