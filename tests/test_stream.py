"""Training from a memory-mapped .npy in shuffled chunks (data larger than memory)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aecli import io, modelfile
from aecli.config import ModelConfig
from aecli.io import stream
from tests.conftest import invoke


@pytest.fixture
def digits_npy(tmp_path: Path, digits: np.ndarray) -> Path:
    path = tmp_path / "d.npy"
    np.save(path, digits[:600].reshape(-1, 8, 8))
    return path


def _train(data: Path, out: Path, *flags: object) -> None:
    result = invoke(["train", data, "-o", out, "--epochs", "8", "-q", *flags])
    assert result.code == 0, result.stderr


def test_streamed_training_learns_like_in_memory(tmp_path: Path, digits_npy: Path) -> None:
    streamed, loaded = tmp_path / "s.safetensors", tmp_path / "m.safetensors"
    _train(digits_npy, streamed, "--chunk-rows", "128")
    _train(digits_npy, loaded)
    reports = {}
    for name, model in (("streamed", streamed), ("loaded", loaded)):
        result = invoke(["evaluate", model, digits_npy, "--json", "--baseline", "pca"])
        reports[name] = json.loads(result.text)
    assert reports["streamed"]["mse"] == pytest.approx(reports["loaded"]["mse"], rel=0.25)
    # PCA fitted in chunks over all rows equals the in-memory fit over its rows closely
    assert reports["streamed"]["pca_mse"] == pytest.approx(reports["loaded"]["pca_mse"], rel=0.05)
    fitted = modelfile.load(str(streamed))
    assert fitted.train_config.chunk_rows == 128 and fitted.row_shape == (8, 8)
    assert fitted.summary["rows"] + fitted.summary["val_rows"] == 600


KINDS = {
    "basic": [],  # the hand-written step
    "tied": ["--tied"],  # autograd
    "sparse": ["--kind", "sparse"],
    "vae": ["--kind", "vae"],
    "denoise": ["--kind", "denoise", "--noise", "dropout"],
}


@pytest.mark.determinism
@pytest.mark.parametrize("kind", list(KINDS))
def test_loaded_or_streamed_the_same_file(
    tmp_path: Path, digits_npy: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Whether a .npy is streamed is a memory decision: it must not change one byte."""
    loaded, streamed = tmp_path / "loaded.safetensors", tmp_path / "streamed.safetensors"
    flags = ["--batch-size", "32", "--epochs", "3", *KINDS[kind]]
    _train(digits_npy, loaded, *flags)
    monkeypatch.setattr(stream, "_available_memory", lambda: 1000)  # now it streams
    assert stream.should_stream(str(digits_npy), 0)
    _train(digits_npy, streamed, *flags)
    assert streamed.read_bytes() == loaded.read_bytes()


@pytest.mark.determinism
def test_a_table_of_repeated_rows_trains_one_file_however_it_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows that repeat take their reach past their copies (aecli/copies.py): loaded,
    streamed or trained again, the same bytes."""
    rng = np.random.default_rng(3)
    grades = np.repeat(rng.integers(1, 4, size=(12, 5)), 25, axis=0)  # 12 rows, 25 times each
    npy = tmp_path / "grades.npy"
    np.save(npy, rng.permutation(np.concatenate([grades, rng.integers(1, 11, (60, 5))])))
    files = [tmp_path / f"{n}.safetensors" for n in ("a", "b", "streamed")]
    _train(npy, files[0], "--epochs", "2")
    _train(npy, files[1], "--epochs", "2")
    monkeypatch.setattr(stream, "_available_memory", lambda: 1000)  # now it streams
    assert stream.should_stream(str(npy), 0)
    _train(npy, files[2], "--epochs", "2")
    assert files[0].read_bytes() == files[1].read_bytes() == files[2].read_bytes()


@pytest.mark.determinism
def test_several_chunks_in_memory_take_the_steps_streaming_takes(
    tmp_path: Path, digits: np.ndarray
) -> None:
    """--chunk-rows 100 on a CSV (read whole) and on a .npy (streamed): the same weights."""
    csv, npy = tmp_path / "d.csv", tmp_path / "d.npy"
    np.savetxt(csv, digits[:450], delimiter=",", fmt="%g")
    np.save(npy, digits[:450])
    flags = ["--chunk-rows", "100", "--batch-size", "32", "--epochs", "3", "--kind", "vae"]
    weights = []
    for data in (csv, npy):
        out = tmp_path / f"{data.suffix}.safetensors"
        _train(data, out, *flags)
        weights.append(load_file(str(out)))
    assert weights[0].keys() == weights[1].keys()
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key


@pytest.mark.determinism
def test_streamed_training_is_deterministic_and_resumable(tmp_path: Path, digits_npy: Path) -> None:
    a, b, part = (tmp_path / f"{n}.safetensors" for n in ("a", "b", "part"))
    _train(digits_npy, a, "--chunk-rows", "100")
    _train(digits_npy, b, "--chunk-rows", "100")
    assert a.read_bytes() == b.read_bytes()
    result = invoke(["train", digits_npy, "-o", part, "--epochs", "4", "-q", "--chunk-rows", "100"])
    assert result.code == 0
    _train(digits_npy, part, "--resume", part)
    assert part.read_bytes() == a.read_bytes()


def test_large_npy_streams_automatically(
    tmp_path: Path, digits_npy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not io.should_stream(str(digits_npy), 0)
    monkeypatch.setattr(stream, "_available_memory", lambda: 1000)
    assert io.should_stream(str(digits_npy), 0)
    assert not io.should_stream(str(tmp_path / "x.csv"), 0)
    assert io.should_stream(str(digits_npy), 10)


def test_streamed_bad_values_are_located_or_dropped(tmp_path: Path, digits: np.ndarray) -> None:
    values = digits[:300].copy()
    values[[5, 77], 3] = np.nan
    np.save(tmp_path / "bad.npy", values)
    out = tmp_path / "m.safetensors"
    refused = invoke(["train", tmp_path / "bad.npy", "-o", out, "--chunk-rows", "64", "-q"])
    assert refused.code == 1 and "row 5, column 3" in refused.stderr and not out.exists()
    dropped = invoke(
        ["train", tmp_path / "bad.npy", "-o", out, "--chunk-rows", "64", "--allow-nan",
         "--epochs", "2"]
    )  # fmt: skip
    assert dropped.code == 0 and "dropped 2 rows" in dropped.stderr
    config = ModelConfig(n_inputs=64, hidden=(16,), latent=4)
    assert modelfile.load(str(out)).config.n_inputs == config.n_inputs


@pytest.mark.parametrize("flags", [["--loss", "bce"], ["--kind", "vae", "--loss", "bce"]])
def test_streamed_training_refuses_bce_outside_the_unit_range(
    tmp_path: Path, digits_npy: Path, flags: list[str]
) -> None:
    """F07: the in-memory refusal holds when the rows are streamed too."""
    for chunk in ([], ["--chunk-rows", "100"]):
        args = ["train", digits_npy, "-o", tmp_path / "m.safetensors", "--epochs", "1", "-q"]
        result = invoke([*args, *flags, "--scale", "standard", *chunk])
        assert result.code == 2, (chunk, result.stderr)
        assert "cross-entropy needs inputs in [0, 1]" in result.stderr
        assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.determinism
def test_rows_dropped_by_allow_nan_are_skipped_alike_loaded_or_streamed(
    tmp_path: Path, digits: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows are numbered after --allow-nan drops: the streamed reader skips them by number."""
    values = digits[:500].astype(np.float32).copy()
    values[[3, 4, 150, 499], 5] = np.nan
    np.save(tmp_path / "gaps.npy", values)
    loaded, streamed = tmp_path / "loaded.safetensors", tmp_path / "streamed.safetensors"
    flags = ["--allow-nan", "--chunk-rows", "100", "--epochs", "2"]
    csv = tmp_path / "gaps.csv"
    np.savetxt(csv, values, delimiter=",", fmt="%g")  # read whole: the rows in memory
    _train(csv, loaded, *flags)
    _train(tmp_path / "gaps.npy", streamed, *flags)  # --chunk-rows streams a .npy
    a, b = load_file(str(loaded)), load_file(str(streamed))
    assert modelfile.load(str(streamed)).summary["rows"] + 50 == 496
    for key in a:
        if key.startswith(("model.", "optim.")):
            assert torch.equal(a[key], b[key]), key
