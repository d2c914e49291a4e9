"""The fourth hostile test's findings (shared/reliability/findings4.md), each run at small size.

Each test runs its finding's repro and checks what the docs promise; each failed before
its fix. The classes behind them are tested where they live (modelfile, io, restart).
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from aecli import api, modelfile
from tests.conftest import invoke

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
feather = pytest.importorskip("pyarrow.feather")

QUIET = ["--epochs", "1", "-q"]


def _csv(path: Path, values: np.ndarray, names: str) -> Path:
    np.savetxt(path, values, delimiter=",", header=names, comments="", fmt="%.7g")
    return path


# 1. A value of 1e20 in a table, or data near 1e18 under --scale none ----------------------


def test_a_huge_training_value_still_gives_a_model_every_command_loads(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).normal(size=(200, 3))
    good = _csv(tmp_path / "good.csv", rows, "a,b,c")
    rows[5, 1] = 1e20
    huge = _csv(tmp_path / "v.csv", rows, "a,b,c")
    model = tmp_path / "m.safetensors"
    assert invoke(["train", huge, "-o", model, *QUIET]).code == 0
    fitted = modelfile.load(str(model))  # the percentiles are finite and ordered
    assert all(np.isfinite(q).all() for q in fitted.score_quantiles.values())
    assert invoke(["encode", model, good]).code == 0
    scored = invoke(["score", model, huge, "--contamination", "0.01"])
    assert scored.code == 0, scored.stderr
    flags = [line.split(",")[-1] for line in scored.text.splitlines()[1:]]
    assert flags[5] == "1"  # the row of 1e20 is flagged, not lost in a NaN


def test_an_overflowed_optimizer_state_fails_and_keeps_the_earlier_model(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).normal(size=(300, 4))
    good = _csv(tmp_path / "good.csv", rows, "a,b,c,d")
    big = _csv(tmp_path / "e18.csv", rows * 1e18, "a,b,c,d")
    model = tmp_path / "m.safetensors"
    assert invoke(["train", good, "-o", model, *QUIET]).code == 0
    before = model.read_bytes()
    result = invoke(["train", big, "-o", model, "--epochs", "5", "--scale", "none", "-q"])
    assert result.code == 1
    assert "training diverged: optim." in result.stderr and "overflowed float32" in result.stderr
    assert model.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["e18.csv", "good.csv", "m.safetensors"]


def test_the_estimator_refuses_to_fit_what_it_could_not_save(tmp_path: Path) -> None:
    from aecli import Autoencoder

    rows = np.random.default_rng(0).normal(size=(300, 4)) * 1e18
    with pytest.raises(ValueError, match="training diverged"):
        Autoencoder(epochs=5, scale="none").fit(rows)


def test_save_never_writes_a_file_load_refuses(tmp_path: Path, table_csv: Path) -> None:
    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, *QUIET]).code == 0
    before = model.read_bytes()
    fitted = modelfile.load(str(model))
    fitted.score_quantiles["score"] = fitted.score_quantiles["score"][::-1].copy()  # decreasing
    with pytest.raises(modelfile.ModelFileError, match="not written, as no command could load"):
        modelfile.save(fitted, str(model))
    assert model.read_bytes() == before


# 2 and 5. Parquet/Arrow ids keep their type and values ------------------------------------

N = 300


def _id_arrays() -> dict[str, object]:
    ts = np.datetime64("2024-03-01T12:00:00") + np.arange(N) * np.timedelta64(250, "ns")
    return {
        "timestamp_ns": pa.array(ts),
        "duration_ns": pa.array(np.arange(N) * np.timedelta64(3, "ns")),
        "decimal_30_9": pa.array([Decimal(i).scaleb(-3) for i in range(N)], pa.decimal128(30, 9)),
        "dictionary": pa.array([f"k{i % 7}" for i in range(N)]).dictionary_encode(),
        "halffloat": pa.array(np.arange(N).astype("f2")),
        "uint64_top": pa.array([2**64 - 1 - i for i in range(N)], pa.uint64()),
        "leading_nulls": pa.array([None] * 200 + [f"c{i}" for i in range(N - 200)], pa.string()),
    }


@pytest.fixture(scope="module")
def id_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ids")
    r = np.random.default_rng(0)
    table = pa.table({"id": np.arange(N), "b": r.normal(size=N), "c": r.normal(size=N)})
    pq.write_table(table, folder / "train.parquet")
    model = folder / "m.safetensors"
    result = invoke(["train", folder / "train.parquet", "--id-column", "id", "-o", model, *QUIET])
    assert result.code == 0, result.stderr
    return model


def _read(path: Path) -> object:
    return pq.read_table(path) if path.suffix == ".parquet" else feather.read_table(path)


@pytest.mark.parametrize("kind", list(_id_arrays()))
@pytest.mark.parametrize("into", [".parquet", ".arrow"])
def test_ids_pass_through_with_their_type(tmp_path: Path, id_model: Path, kind: str, into: str):
    r = np.random.default_rng(1)
    ids = _id_arrays()[kind]
    source = tmp_path / "in.arrow"  # Arrow keeps every type as written (Parquet has no [s])
    table = pa.table({"id": ids, "b": r.normal(size=N), "c": r.normal(size=N)})
    feather.write_feather(table, source, chunksize=100)  # three batches: the first all-null
    out = tmp_path / f"codes{into}"
    result = invoke(["encode", id_model, source, "-o", out])
    assert result.code == 0, result.stderr
    got = _read(out).column("id")
    assert got.type == ids.type  # type: ignore[attr-defined]
    assert got.to_pylist() == ids.to_pylist()  # type: ignore[attr-defined]


def test_csv_output_writes_arrow_ids_exactly(tmp_path: Path, id_model: Path) -> None:
    r = np.random.default_rng(1)
    source = tmp_path / "in.parquet"
    ids = _id_arrays()["timestamp_ns"]
    pq.write_table(pa.table({"id": ids, "b": r.normal(size=N), "c": r.normal(size=N)}), source)
    result = invoke(["encode", id_model, source])
    assert result.code == 0, result.stderr
    written = [line.split(",")[0] for line in result.text.splitlines()[1:]]
    assert len(set(written)) == N and written[1] == "2024-03-01 12:00:00.000000250"
    big = invoke(["encode", id_model, tmp_path / "in.parquet"])
    assert big.code == 0


# 3 and 10. A stopped run is continued only on the same data -------------------------------


def test_the_fingerprint_is_of_the_bytes_and_the_resolved_path(tmp_path: Path) -> None:
    from aecli import restart

    r = np.random.default_rng(0)
    monday, tuesday = tmp_path / "monday.npy", tmp_path / "tuesday.npy"
    np.save(monday, r.normal(size=(50, 4)).astype("f4"))
    np.save(tuesday, r.normal(size=(50, 4)).astype("f4"))
    data = tmp_path / "data.npy"
    data.write_bytes(monday.read_bytes())
    flags = {"data": str(data), "epochs": 3}
    first = restart.fingerprint(flags, str(data))
    data.write_bytes(tuesday.read_bytes())  # other rows, the same size...
    stat = monday.stat()
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and mtime (cp -p)
    assert restart.fingerprint(flags, str(data)) != first
    data.write_bytes(monday.read_bytes())
    os.chdir(tmp_path)
    assert restart.fingerprint({"data": "./data.npy", "epochs": 3}, "./data.npy") == first
    assert restart.fingerprint({"data": "data.npy", "epochs": 3}, "data.npy") == first


def test_stdin_is_never_taken_for_a_file_named_dash(tmp_path: Path, monkeypatch) -> None:
    from aecli.cli import resuming

    monkeypatch.chdir(tmp_path)
    (tmp_path / "-").write_text("notes\n")
    run, resume = resuming.pick_up({"checkpoint_every": 1}, "-", "m.safetensors", None, print)
    assert (run, resume) == (None, None)


# 4. A run stopped during its statistics is finished by the same command or --resume -----


@pytest.mark.determinism
def test_a_run_stopped_during_its_statistics_is_finished(
    tmp_path: Path, table_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, out = tmp_path / "whole.safetensors", tmp_path / "m.safetensors"
    flags = ["--epochs", "2", "--checkpoint-every", "1", "-q"]
    assert invoke(["train", table_csv, "-o", whole, *flags]).code == 0

    def interrupted(*args: object) -> None:  # SIGTERM inside the statistics step
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(api, "_add_baselines", interrupted)
        assert invoke(["train", table_csv, "-o", out, *flags]).code == 130
    again = invoke(["train", table_csv, "-o", out, *flags])  # a requeue: the same command
    assert again.code == 0, again.stderr
    assert out.read_bytes() == whole.read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(api, "_add_baselines", interrupted)
        assert invoke(["train", table_csv, "-o", out, *flags]).code == 130
    advised = invoke(["train", table_csv, "--resume", out, "-o", out])  # what stderr advises
    assert advised.code == 0, advised.stderr
    assert modelfile.load(str(out)).code_stats is not None
    finished = invoke(["train", table_csv, "--resume", out, "-o", tmp_path / "x.safetensors"])
    assert finished.code == 2 and "already trained 2 epochs" in finished.stderr
