"""The train --log format: written by EpochLog, read by read_log (aecli/training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aecli import modelfile
from aecli.errors import DataError
from aecli.training import EpochLog, EpochStats, read_log
from tests.conftest import FAST, invoke


def test_what_is_written_is_read_back(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with EpochLog(str(path), []) as log:
        log.write(EpochStats(1, 2, {"loss": 0.5, "reconstruction": 0.5}, 0.6, 0.01))
        log.write(EpochStats(2, 2, {"loss": float("nan"), "reconstruction": 0.4}, None, 0.02))
        assert log.save() is None  # the caller saves it, after the model
    records = read_log(str(path))
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0] == {"epoch": 1, "loss": 0.5, "reconstruction": 0.5, "val_loss": 0.6,
                          "seconds": 0.01}  # fmt: skip
    assert records[1]["val_loss"] is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"epoch": 1, "loss": "abc"}\n', "jsonl:1: 'loss' is 'abc', not a number"),  # F18
        ('{"epoch": 1}\n{"loss": 1}\n', "jsonl:2: not a line of an aecli training log"),
        ("[1, 2]\n", "not a line of an aecli training log"),
        ('{"epoch": true}\n', "not a line"),
        ("\n\n", "empty training log"),
    ],
)
def test_a_bad_log_is_a_data_error_naming_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_log(str(path))


def test_a_log_path_that_is_an_input_is_refused_before_training(tmp_path: Path) -> None:
    from aecli.errors import UsageError

    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    with pytest.raises(UsageError, match="--log"), EpochLog(str(data), [str(data)]):
        pass
    assert data.read_text() == "a\n1\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_log_that_cannot_be_written_costs_a_warning_not_the_model(
    tmp_path: Path, digits_csv: Path
) -> None:
    """F3-2: a --log on a full disk threw the trained model away; F3-14: no path was named."""
    out = tmp_path / "m.safetensors"
    result = invoke(["train", digits_csv, "-o", out, *FAST, "--log", "/dev/full"])
    assert result.code == 0, result.stderr
    assert result.stderr == (
        "aecli: warning: --log /dev/full: not written (No space left on device); "
        "the model was saved\n"
    )
    assert modelfile.load(str(out)).summary["kept_epoch"] == 3
    full = invoke(["train", digits_csv, "-o", "/dev/full", *FAST])
    assert (full.code, full.stderr) == (1, "aecli: error: /dev/full: No space left on device\n")
