"""Several processes under a real torchrun (gloo on the CPU): the same model as one process.

Each torchrun job costs a few seconds of start-up (two processes importing torch).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aecli import modelfile
from aecli.errors import UsageError
from aecli.training._distributed import BatchShare, World, from_env, rank_device
from aecli.training._loop import Sharded
from tests.conftest import invoke

ROOT = Path(__file__).resolve().parent.parent
JOB = Path(__file__).resolve().parent.parent / "torchrun_job.py"
# An odd batch over 360 training rows: uneven shares, and a last batch of 10.
# gloo on the CPU, also where a GPU is: torchrun's two ranks would each need their own.
ARGS = ["--epochs", "3", "--batch-size", "25", "--seed", "4", "--quiet", "--device", "cpu"]
KINDS = {
    "basic": ["--kind", "basic"],  # the hand-written fast path
    "tied": ["--kind", "basic", "--tied"],  # autograd
    "sparse": ["--kind", "sparse"],  # q over the global batch
    "vae": ["--kind", "vae", "--scale", "minmax"],  # eps drawn for the global batch
}

needs_torchrun = pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)


def _torchrun(*args: object, env: dict[str, str] | None = None, **kwargs: object) -> list[str]:
    runner = Path(sys.executable).parent / "torchrun"
    command = str(runner) if runner.exists() else "torchrun"
    return [command, "--nproc-per-node", "2", "--master-port", str(_free_port()), *map(str, args)]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(path)).items() if k.startswith(("model.", "optim."))}


def _assert_same_model(one: Path, two: Path) -> None:
    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys() and a
    # rtol 2e-4 of each tensor's scale: sums grouped by rank round differently. From the
    # principal start (which every process computes to the same bytes, on one thread) that
    # drifted to 5e-5 over these tests' 3 epochs, against under 1e-5 from a random start;
    # most likely its units of 1% random weights, whose small gradients Adam's normalised
    # steps follow, rounding and all. A wrong share or a lost row moves far more.
    for key in a:
        scale = float(a[key].abs().max())
        worst = float((a[key] - b[key]).abs().max())
        assert worst <= 2e-4 * scale + 1e-7, (key, worst, scale)


# -- the pieces, without processes -----------------------------------------------------
@pytest.mark.parametrize("size", [1, 2, 3, 8])
@pytest.mark.parametrize("rows", [1, 2, 7, 64, 65])
def test_shares_cover_a_batch_once(size: int, rows: int) -> None:
    shares = [World(rank, size).share(rows) for rank in range(size)]
    assert shares[0][0] == 0 and shares[-1][1] == rows
    assert all(a[1] == b[0] for a, b in itertools.pairwise(shares))
    lengths = [hi - lo for lo, hi in shares]
    assert max(lengths) - min(lengths) <= 1


def test_the_world_comes_from_torchruns_environment() -> None:
    assert from_env({}) == World()
    assert not from_env({"WORLD_SIZE": "1", "RANK": "0"}).many
    world = from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (world.rank, world.size, world.local_rank, world.local_size) == (3, 4, 1, 2)
    assert world.many and not world.main


def test_a_share_gets_its_rows_of_the_whole_batchs_noise() -> None:
    like = torch.zeros(3, 5)
    torch.manual_seed(0)
    whole = torch.randn(8, 5)
    torch.manual_seed(0)
    assert torch.equal(BatchShare(2, 5, 8).noise(like, "normal"), whole[2:5])
    torch.manual_seed(0)
    mask = torch.empty(8, 5).bernoulli_(0.7)
    torch.manual_seed(0)
    assert torch.equal(BatchShare(5, 8, 8).noise(like, "bernoulli", 0.7), mask[5:8])


def test_each_rank_reads_its_share_of_a_streamed_npy(tmp_path: Path, digits: np.ndarray) -> None:
    """Under torchrun a .npy is read by rank: the ranks' rows, batch by batch, are the chunk."""
    from aecli.config import TrainConfig
    from aecli.io import NpyRows
    from aecli.training import _order as order

    path = tmp_path / "d.npy"
    np.save(path, digits)
    config = TrainConfig(chunk_rows=500, batch_size=25)
    source = order.OnDisk(NpyRows(str(path)))
    scaler = order.fit_scaler(source, config, False)
    plan = order.Order.of(source.rows, config, source.n_features)
    cpu = torch.device("cpu")

    def rows(world: World) -> order.TrainingRows:
        return order.TrainingRows(source, plan, scaler, config, cpu, world, in_memory=False)

    torch.manual_seed(5)
    chunk = next(iter(rows(World()).epoch(1)))
    assert isinstance(chunk, torch.Tensor)
    whole = chunk[torch.randperm(chunk.shape[0])]  # what one process trains on, in order
    shares = []
    for rank in range(3):
        torch.manual_seed(5)
        share = next(iter(rows(World(rank, 3)).epoch(1)))
        assert isinstance(share, Sharded)
        shares.append(share)
    assert all(s.n == whole.shape[0] for s in shares)
    assert sum(s.rows.shape[0] for s in shares) == whole.shape[0]  # each row read once
    rebuilt, offsets = [], [0, 0, 0]
    for first in range(0, whole.shape[0], 25):
        for rank in range(3):
            lo, hi = World(rank, 3).share(min(25, whole.shape[0] - first))
            rebuilt.append(shares[rank].rows[offsets[rank] : offsets[rank] + hi - lo])
            offsets[rank] += hi - lo
    assert torch.equal(torch.cat(rebuilt), whole)


# -- real torchrun jobs --------------------------------------------------------------
@needs_torchrun
@pytest.mark.parametrize("name", [*KINDS, "basic-csv"])
def test_two_processes_train_the_model_one_process_trains(
    tmp_path: Path, digits_csv: Path, digits: np.ndarray, name: str
) -> None:
    """A .npy: two ranks each stream their share, one process holds every row in memory.

    A CSV: every rank reads it whole and trains on its share of each batch.
    """
    flags = KINDS[name.removesuffix("-csv")]
    data = digits_csv
    if not name.endswith("-csv"):
        data = tmp_path / "d.npy"
        np.save(data, digits[:400])
    two = tmp_path / f"{name}-2.safetensors"
    args = ["-m", "aecli", "train", data, "-o", two, *ARGS, *flags]
    done = subprocess.run(_torchrun(*args), env=_env(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    one = tmp_path / f"{name}-1.safetensors"
    result = invoke(["train", data, "-o", one, *ARGS, *flags])
    assert result.code == 0, result.stderr
    _assert_same_model(one, two)
    codes = [invoke(["encode", model, data, "-o", tmp_path / f"{n}.npy"]) for n, model in
             (("one", one), ("two", two))]  # fmt: skip
    assert all(c.code == 0 for c in codes)
    one_codes, two_codes = np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy")
    np.testing.assert_allclose(two_codes, one_codes, rtol=1e-4, atol=1e-4)
    summary = modelfile.load(str(two)).summary
    assert (summary["world_size"], summary["backend"]) == (2, "gloo")
    assert modelfile.load(str(one)).summary["backend"] is None
    if name != "basic-csv":
        return
    # The file is like any other: info, encode and score use it.
    info = invoke(["info", two])
    assert info.code == 0 and "2 processes" in info.stderr + info.text
    codes = invoke(["encode", two, digits_csv])
    scores = invoke(["score", two, digits_csv])
    assert codes.code == scores.code == 0
    assert len(codes.text.splitlines()) == len(scores.text.splitlines()) == 401


@needs_torchrun
def test_two_processes_stream_a_npy_as_one_process_does(tmp_path: Path, digits: np.ndarray) -> None:
    data, one, two = tmp_path / "d.npy", tmp_path / "1.safetensors", tmp_path / "2.safetensors"
    np.save(data, digits)
    flags = ["--chunk-rows", "500", *ARGS]
    assert invoke(["train", data, "-o", one, *flags]).code == 0
    done = subprocess.run(
        _torchrun("-m", "aecli", "train", data, "-o", two, *flags),
        env=_env(),
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    _assert_same_model(one, two)


@needs_torchrun
def test_a_killed_worker_is_restarted_and_picks_up_the_checkpoint(
    tmp_path: Path, digits_csv: Path
) -> None:
    """torchrun --max-restarts 1: rank 1 dies by SIGKILL in epoch 3 of 5 (15 steps an epoch,
    checkpoints after each); the restarted job continues from epoch 2 to the uninterrupted model.
    """
    out, one = tmp_path / "m.safetensors", tmp_path / "one.safetensors"
    flags = [*ARGS[:-3], "--epochs", "5", "--checkpoint-every", "1", "--device", "cpu"]
    runner = _torchrun("--max-restarts", "1", JOB, "train", digits_csv, "-o", out, *flags)
    env = _env(AECLI_TEST_KILL_RANK="1", AECLI_TEST_KILL_AFTER="31")
    done = subprocess.run(runner, env=env, capture_output=True, timeout=300)
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr[-3000:]
    assert f"aecli: continuing {out} after epoch 2" in stderr, stderr[-3000:]
    assert invoke(["train", digits_csv, "-o", one, *flags]).code == 0
    _assert_same_model(one, out)
    assert modelfile.load(str(out)).summary["kept_epoch"] == 5


@pytest.mark.parametrize(
    ("flag", "values"), [("--batch-size", ("64", "32")), ("--epochs", ("2", "3"))]
)
def test_ranks_started_with_different_flags_say_which(
    tmp_path: Path, digits_csv: Path, flag: str, values: tuple[str, str]
) -> None:
    """F3-3, F3-8: rank 0 died in C++ (exit 134), or both waited out the timeout and failed
    while a whole model was written. Now each rank exits 2 naming the flag, nothing written."""
    out = tmp_path / "m.safetensors"
    env = {**_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port())), "WORLD_SIZE": "2"}
    processes = []
    for rank, value in enumerate(values):
        args = [
            "train",
            digits_csv,
            "-o",
            out,
            "--epochs",
            "2",
            "-q",
            "--device",
            "cpu",
            flag,
            value,
        ]
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "aecli", *map(str, args)],
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ))  # fmt: skip
    results = [(p.wait(timeout=120), p.communicate()[1].decode()) for p in processes]
    expected = f"aecli: error: {flag}: rank 1 has {values[1]}, rank 0 has {values[0]}; every"
    for rank, (code, stderr) in enumerate(results):
        assert code == 2, stderr
        tag = f"[rank {rank}] " if rank else ""
        assert stderr.startswith(tag + expected) and len(stderr.splitlines()) == 1, stderr
    assert not out.exists()


@needs_torchrun
def test_a_rank_that_fails_takes_the_job_down(tmp_path: Path, digits_csv: Path) -> None:
    out = tmp_path / "m.safetensors"
    start = time.monotonic()
    done = subprocess.run(
        _torchrun(JOB, "train", digits_csv, "-o", out, "--epochs", "50", "--device", "cpu"),
        env=_env(AECLI_TEST_FAIL_RANK="1"),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode != 0 and time.monotonic() - start < 60
    lines = done.stderr.decode().splitlines()
    assert "[rank 1] aecli: error: out of memory" in "\n".join(lines)
    assert any(line.startswith("aecli: error: another training process failed") for line in lines)
    assert not any(line.startswith("aecli: internal error") for line in lines)
    assert os.listdir(tmp_path) == []


@needs_torchrun
def test_sigterm_under_torchrun_saves_a_model_one_process_resumes(
    tmp_path: Path, digits_csv: Path
) -> None:
    out = tmp_path / "m.safetensors"
    flags = ["--batch-size", "32", "--seed", "3", "--quiet", "--device", "cpu"]
    process = subprocess.Popen(
        _torchrun("-m", "aecli", "train", digits_csv, "-o", out, *flags, "--epochs", "100000",
                  "--checkpoint-every", "1"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not out.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    said = [line for line in stderr.decode().splitlines() if line.startswith("aecli")]
    assert said and said[0].startswith("aecli: terminated (SIGTERM) during epoch"), said
    saved = modelfile.load(str(out))
    kept = saved.summary["kept_epoch"]
    assert saved.summary["stop"] == "interrupted" and saved.optimizer_state is not None
    # One process continues what two started, to the model one process trains throughout.
    target = str(kept + 2)
    whole = tmp_path / "whole.safetensors"
    assert invoke(["train", digits_csv, "-o", whole, *flags, "--epochs", target]).code == 0
    resumed = invoke(
        ["train", digits_csv, "-o", out, "--resume", out, "--epochs", target, "--device", "cpu"]
    )
    assert resumed.code == 0, resumed.stderr
    _assert_same_model(whole, out)
    assert np.isclose(
        modelfile.load(str(out)).summary["val_loss"], modelfile.load(str(whole)).summary["val_loss"]
    )


def test_more_ranks_on_a_node_than_it_has_gpus_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NCCL needs a GPU a rank: the rank past the last one is told how to fix the launch."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cuda, second = torch.device("cuda"), World(1, 2, 1, 2)
    with pytest.raises(UsageError, match=r"2 processes .* 1 CUDA device.*--nproc-per-node 1"):
        rank_device(second, cuda)
    assert rank_device(World(0, 2, 0, 2), cuda) == torch.device("cuda", 0)
    assert rank_device(second, torch.device("cpu")) == torch.device("cpu")
    assert rank_device(World(), cuda) == cuda


@needs_torchrun
@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() != 1, reason="needs exactly one CUDA device")
def test_two_ranks_on_one_gpu_say_so_in_one_line(tmp_path: Path, digits_csv: Path) -> None:
    out = tmp_path / "m.safetensors"
    done = subprocess.run(
        _torchrun("-m", "aecli", "train", digits_csv, "-o", out, "--device", "cuda"),
        env=_env(),
        capture_output=True,
        timeout=120,
    )
    stderr = done.stderr.decode()
    assert done.returncode != 0 and "--nproc-per-node 1" in stderr, stderr[-2000:]
    assert "internal error" not in stderr and not out.exists()
