"""Choosing columns, carrying ids through, and dropping rows with missing values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aecli import io as aio
from aecli import modelfile
from aecli.errors import DataError, UsageError
from aecli.io import ReadStats, read_table
from tests.conftest import FAST, invoke


@pytest.fixture
def mixed_csv(tmp_path: Path, table: np.ndarray) -> Path:
    """An id column first, the 10 features, and a label column at the end."""
    path = tmp_path / "mixed.csv"
    names = ",".join(f"f{i}" for i in range(table.shape[1]))
    lines = [f"id,{names},label"]
    for i, row in enumerate(table):
        lines.append(f"user {i:03d}," + ",".join(f"{v:.6f}" for v in row) + f",{i % 2}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_columns_by_name_and_index_and_ids(mixed_csv: Path, table: np.ndarray) -> None:
    by_name = read_table(str(mixed_csv), columns=("f2", "f0"), id_column="id")
    by_index = read_table(str(mixed_csv), columns=("3", "1"), id_column="0")
    for result in (by_name, by_index):
        assert result.columns == ["f2", "f0"]
        assert result.id_name == "id"
        assert result.ids is not None and result.ids[:2] == ["user 000", "user 001"]
        np.testing.assert_allclose(result.values, table[:, [2, 0]], atol=1e-6)


def test_id_column_alone_keeps_every_other_column(mixed_csv: Path) -> None:
    result = read_table(str(mixed_csv), id_column="id")
    assert result.columns == [f"f{i}" for i in range(10)] + ["label"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"columns": ("f0", "nope")}, r"mixed.csv: no column named 'nope' \(--columns\); its "),
        ({"columns": ("99",)}, r"column index 99 is out of range \(--columns\)"),
        ({"id_column": "who"}, r"no column named 'who' \(--id-column\)"),
    ],
)
def test_bad_column_choices_name_the_file_and_flag(
    mixed_csv: Path, options: dict, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        read_table(str(mixed_csv), **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"columns": ("f1", "2")}, r"--columns: column '2' is named twice"),
        ({"columns": ("id",), "id_column": "id"}, r"--id-column: 'id' is also one of the feature"),
    ],
)
def test_conflicting_column_flags_are_usage_errors(
    mixed_csv: Path, options: dict, message: str
) -> None:
    """F23: a conflict between flags is the user's command, not the data: exit 2."""
    with pytest.raises(UsageError, match=message):
        read_table(str(mixed_csv), **options)


def test_npy_columns_by_index_and_no_id_column(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(12, dtype=np.float32).reshape(3, 2, 2))
    picked = read_table(str(tmp_path / "a.npy"), columns=("3", "0"))
    assert picked.values.tolist() == [[3, 0], [7, 4], [11, 8]] and picked.row_shape == (2,)
    with pytest.raises(UsageError, match="--id-column needs CSV input"):
        read_table(str(tmp_path / "a.npy"), id_column="0")


def test_one_column_csv(tmp_path: Path) -> None:
    (tmp_path / "one.csv").write_text("x\n1\n2.5\n")
    result = read_table(str(tmp_path / "one.csv"))
    assert result.columns == ["x"] and result.values.tolist() == [[1.0], [2.5]]


def test_ids_flow_through_encode_and_reconstruct(tmp_path: Path, mixed_csv: Path) -> None:
    model = tmp_path / "m.safetensors"
    features = ",".join(f"f{i}" for i in range(10))
    trained = invoke(
        ["train", mixed_csv, "-o", model, "--id-column", "id", "--columns", features, *FAST]
    )
    assert trained.code == 0, trained.stderr
    encoded = invoke(["encode", model, mixed_csv, "--id-column", "id"])
    assert encoded.code == 0, encoded.stderr
    lines = encoded.text.splitlines()
    assert lines[0].split(",")[0] == "id" and lines[0].split(",")[1] == "z0"
    assert [line.split(",")[0] for line in lines[1:]] == [f"user {i:03d}" for i in range(300)]
    out = tmp_path / "r.tsv"
    assert invoke(["reconstruct", model, mixed_csv, "--id-column", "id", "-o", out]).code == 0
    rows = out.read_text().splitlines()
    assert rows[0].split("\t") == ["id", *features.split(",")]
    assert rows[5].split("\t")[0] == "user 004" and len(rows) == 301


def test_a_model_picks_its_columns_by_name(
    tmp_path: Path, mixed_csv: Path, table_csv: Path
) -> None:
    """Reordered and extra columns in a later file are matched by header name."""
    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, *FAST]).code == 0
    plain = invoke(["encode", model, table_csv])
    # mixed.csv has an id and a label column around the same features
    picked = invoke(["encode", model, mixed_csv])
    assert plain.code == 0 and picked.code == 0, picked.stderr
    assert plain.stdout == picked.stdout


def test_chunked_encoding_equals_encoding_at_once(
    monkeypatch: pytest.MonkeyPatch, basic_model: Path, digits_csv: Path
) -> None:
    whole = invoke(["encode", basic_model, digits_csv])
    monkeypatch.setattr(aio, "CHUNK_ROWS", 7)
    chunked = invoke(["encode", basic_model, digits_csv])
    assert whole.code == chunked.code == 0
    assert whole.stdout == chunked.stdout


@pytest.fixture
def gappy_csv(tmp_path: Path) -> Path:
    path = tmp_path / "gappy.csv"
    path.write_text("id,a,b\nr0,1,2\nr1,,3\nr2,NaN,4\nr3,5,inf\nr4,NA,1\nr5,6,7\n")
    return path


def test_missing_values_are_refused_with_a_hint(gappy_csv: Path) -> None:
    with pytest.raises(DataError, match=r"gappy.csv:3:2: empty cell \(--allow-nan drops"):
        read_table(str(gappy_csv), id_column="id")


def test_allow_nan_drops_rows_and_counts_them(gappy_csv: Path) -> None:
    stats = ReadStats()
    result = read_table(str(gappy_csv), id_column="id", allow_nan=True, stats=stats)
    assert stats.dropped == 4
    assert result.ids == ["r0", "r5"]
    assert result.values.tolist() == [[1, 2], [6, 7]]


def test_allow_nan_still_refuses_text(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(DataError, match=r"t.csv:3:2: 'oops' is not a number"):
        read_table(str(tmp_path / "t.csv"), allow_nan=True)


def test_allow_nan_on_npy_and_when_nothing_is_left(tmp_path: Path) -> None:
    array = np.array([[1, np.nan], [2, 3], [np.inf, 0]], dtype=np.float64)
    np.save(tmp_path / "a.npy", array)
    stats = ReadStats()
    assert read_table(str(tmp_path / "a.npy"), allow_nan=True, stats=stats).values.tolist() == [
        [2, 3]
    ]
    assert stats.dropped == 2
    np.save(tmp_path / "b.npy", np.full((2, 2), np.nan))
    with pytest.raises(DataError, match="no rows left after dropping 2"):
        read_table(str(tmp_path / "b.npy"), allow_nan=True)


def test_allow_nan_from_the_shell(tmp_path: Path, gappy_csv: Path) -> None:
    model = tmp_path / "m.safetensors"
    refused = invoke(["train", gappy_csv, "-o", model, "--id-column", "id", *FAST])
    assert refused.code == 1 and "--allow-nan" in refused.stderr and not model.exists()
    args = ["train", gappy_csv, "-o", model, "--id-column", "id", "--allow-nan", "--epochs", "2"]
    trained = invoke(args)
    assert trained.code == 0, trained.stderr
    assert "dropped 4 rows of" in trained.stderr
    encoded = invoke(["encode", model, gappy_csv, "--id-column", "id", "--allow-nan"])
    assert encoded.code == 0
    assert [line.split(",")[0] for line in encoded.text.splitlines()] == ["id", "r0", "r5"]
    assert "dropped 4 rows" in encoded.stderr


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("a,a,b", ":1:2: column name 'a' is in the header 2 times (columns 1, 2)"),
        ("a,,c", ":1:2: column 2 has no name in the header"),
        ("x,b,x", ":1:3: column name 'x' is in the header 2 times (columns 1, 3)"),
    ],
)
def test_repeated_or_empty_names_are_refused(tmp_path: Path, header: str, message: str) -> None:
    """F01: a model reading by name would take the first 'a' twice and never the second."""
    from tests.conftest import invoke

    data = tmp_path / "t.csv"
    data.write_text(header + "\n" + "\n".join(f"{i},{i * 2},{i % 3}" for i in range(20)) + "\n")
    for command in (["train", data, "-o", tmp_path / "m.safetensors", "--epochs", "1"],):
        result = invoke(command)
        assert result.code == 1 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.safetensors").exists()


def test_the_id_column_is_remembered_by_the_model(tmp_path: Path) -> None:
    """Issue 30 item 7: --id-column had to be given again to every command, and the error
    for a text column did not suggest it."""
    rng = np.random.default_rng(0)
    data = tmp_path / "ids.csv"
    lines = ["id,a,b,c"] + [f"c{i:05d}," + ",".join(f"{v:.5f}" for v in row)
                            for i, row in enumerate(rng.normal(size=(80, 3)))]  # fmt: skip
    data.write_text("\n".join(lines) + "\n")
    model = tmp_path / "m.safetensors"
    plain = invoke(["train", data, "-o", model, "-q", "--epochs", "2"])
    assert (
        plain.code == 1
        and "carry it with --id-column id, or leave it out with --exclude id" in plain.stderr
    )
    assert (
        invoke(["train", data, "-o", model, "-q", "--epochs", "2", "--id-column", "id"]).code == 0
    )
    assert modelfile.load(str(model)).id_column == "id"
    for command in ("encode", "score", "reconstruct"):
        result = invoke([command, model, data])
        assert result.code == 0, result.stderr
        rows = result.text.splitlines()
        assert rows[0].startswith("id,") and rows[1].startswith("c00000,"), command
    as_npy = invoke(["encode", model, data, "-o", tmp_path / "codes.npy"])
    assert as_npy.code == 0 and np.load(tmp_path / "codes.npy").shape[0] == 80
    # A file without that column is read as before: every column a feature.
    (tmp_path / "no-id.csv").write_text("\n".join(line.split(",", 1)[1] for line in lines) + "\n")
    assert invoke(["encode", model, tmp_path / "no-id.csv"]).code == 0
