"""Resuming and checkpoints: a stopped run continues to exactly what an uninterrupted one gives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aecli import baselines, modelfile, models
from aecli.config import ModelConfig, TrainConfig
from aecli.fitted import FittedModel
from aecli.io import read_table
from tests.conftest import invoke, signal_at_epoch, train_on

ARGS = ["--batch-size", "32", "--seed", "3", "--quiet"]
LOUD = ARGS[:-1]  # what a run says on stderr is part of the test


def _train(data: Path, out: Path, *extra: object) -> None:
    result = invoke(["train", data, "-o", out, *ARGS, *extra])
    assert result.code == 0, result.stderr


@pytest.mark.determinism
@pytest.mark.parametrize("kind", ["basic", "vae", "denoise", "sparse"])
def test_resume_repeats_an_uninterrupted_run(tmp_path: Path, table_csv: Path, kind: str) -> None:
    whole, part = tmp_path / "whole.safetensors", tmp_path / "part.safetensors"
    _train(table_csv, whole, "--kind", kind, "--epochs", "6")
    _train(table_csv, part, "--kind", kind, "--epochs", "3")
    assert modelfile.load(str(part)).summary["kept_epoch"] == 3
    resumed = tmp_path / "resumed.safetensors"
    _train(table_csv, resumed, "--resume", part, "--epochs", "6")
    assert resumed.read_bytes() == whole.read_bytes()


def test_resume_takes_unset_flags_from_the_file(tmp_path: Path, table_csv: Path) -> None:
    part = tmp_path / "part.safetensors"
    _train(table_csv, part, "--epochs", "2", "--lr", "0.01", "--latent", "2")
    # Same model flags repeated are fine; the epoch target and lr come from the file.
    result = invoke(["train", table_csv, "-o", part, "--resume", part, "--latent", "2"])
    assert result.code == 2 and "already trained 2 epochs" in result.stderr
    _train(table_csv, part, "--resume", part, "--latent", "2", "--epochs", "4")
    fitted = modelfile.load(str(part))
    assert fitted.train_config.lr == 0.01 and fitted.summary["epochs"] == 4


@pytest.mark.parametrize(
    ("flag", "value"), [("--kind", "vae"), ("--latent", "5"), ("--seed", "9"), ("--scale", "none")]
)
def test_resume_refuses_to_change_the_model(
    tmp_path: Path, table_csv: Path, flag: str, value: str
) -> None:
    part = tmp_path / "part.safetensors"
    _train(table_csv, part, "--epochs", "1", "--latent", "2")
    result = invoke(
        ["train", table_csv, "-o", part, "--resume", part, "--epochs", "3", flag, value]
    )
    assert result.code == 2
    assert f"{flag}: cannot change on --resume" in result.stderr


def test_checkpoints_are_written_every_n_epochs(table_csv: Path) -> None:
    table = read_table(str(table_csv))
    config = ModelConfig(n_inputs=10, hidden=(8,), latent=3)
    seen: list[tuple[int, int]] = []

    def checkpoint(fitted: FittedModel) -> None:
        data = modelfile.to_bytes(fitted)  # must serialise mid-training
        assert fitted.optimizer_state is not None and fitted.optimizer_state.step > 0
        seen.append((fitted.summary["kept_epoch"], len(data)))

    train_on(table, config, TrainConfig(epochs=5, checkpoint_every=2), checkpoint=checkpoint)
    assert [epoch for epoch, _ in seen] == [2, 4]


def test_checkpoints_need_a_file(table_csv: Path) -> None:
    result = invoke(["train", table_csv, "-o", "-", "--checkpoint-every", "1"])
    assert result.code == 2 and "--checkpoint-every" in result.stderr


def _start(data: Path, out: Path, epochs: int) -> subprocess.Popen:
    args = ["train", str(data), "-o", str(out), *ARGS, "--epochs", str(epochs)]
    return subprocess.Popen(
        [sys.executable, "-m", "aecli", *args, "--checkpoint-every", "1"],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)


STOPS = {
    "ctrl-c": (signal.SIGINT, 130, b"aecli: interrupted during epoch"),
    "sigterm": (signal.SIGTERM, 143, b"aecli: terminated (SIGTERM) during epoch"),  # F31
    "sighup": (signal.SIGHUP, 129, b"aecli: hung up (SIGHUP) during epoch"),
}


@pytest.mark.determinism
@pytest.mark.parametrize("how", [*STOPS, "kill-9"])
def test_a_stopped_run_resumes_to_the_uninterrupted_result(
    tmp_path: Path, digits_csv: Path, how: str
) -> None:
    """Ctrl-C, SIGTERM and SIGHUP save and exit 128+N; kill -9 leaves the last checkpoint."""
    out = tmp_path / "m.safetensors"
    process = _start(digits_csv, out, 100000)
    _wait_for(out, process)
    time.sleep(0.3)
    if how in STOPS:
        sig, code, line = STOPS[how]
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == code, stderr
        assert stderr.startswith(line) and b"saved to" in stderr, stderr
        assert stderr.endswith(f"(continue: --resume {out} -o {out})\n".encode()), stderr
        assert len(stderr.splitlines()) == 1 and b"Traceback" not in stderr
    else:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    if how in STOPS:
        assert os.listdir(tmp_path) == ["m.safetensors"]  # no temporary left behind
    kept = modelfile.load(str(out)).summary["kept_epoch"]
    assert kept >= 1
    target = kept + 2
    whole = tmp_path / "whole.safetensors"
    _train(digits_csv, whole, "--epochs", str(target), "--checkpoint-every", "1")
    _train(digits_csv, out, "--resume", out, "--epochs", str(target))
    assert out.read_bytes() == whole.read_bytes()
    # kill -9 may land between naming the temporary and the rename (F27): the next
    # write into the folder removes what a dead process left.
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "whole.safetensors"]


@pytest.mark.determinism
def test_the_same_command_again_continues_its_stopped_run(
    tmp_path: Path, digits_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A requeued job (Slurm --requeue, a Kubernetes Job) runs the same command again."""
    out, whole = tmp_path / "m.safetensors", tmp_path / "whole.safetensors"
    flags = [*LOUD, "--epochs", "6", "--checkpoint-every", "2"]
    _train(digits_csv, whole, *flags)  # uninterrupted
    with monkeypatch.context() as patch:
        signal_at_epoch(patch, 4)
        stopped = invoke(["train", digits_csv, "-o", out, *flags])
    assert stopped.code == 130 and modelfile.load(str(out)).summary["kept_epoch"] == 3
    again = invoke(["train", digits_csv, "-o", out, *flags])
    assert again.code == 0, again.stderr
    assert again.stderr.startswith(f"aecli: continuing {out} after epoch 3"), again.stderr
    assert out.read_bytes() == whole.read_bytes()
    # Finished, it is not picked up again: the same command trains afresh, to the same file.
    assert "continuing" not in invoke(["train", digits_csv, "-o", out, *flags]).stderr
    assert out.read_bytes() == whole.read_bytes()


def test_a_stopped_run_of_another_command_is_not_picked_up(
    tmp_path: Path, digits_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, fresh = tmp_path / "m.safetensors", tmp_path / "fresh.safetensors"
    flags = [*LOUD, "--epochs", "4", "--checkpoint-every", "1"]
    with monkeypatch.context() as patch:
        signal_at_epoch(patch, 3)
        assert invoke(["train", digits_csv, "-o", out, *flags]).code == 130
    other = invoke(["train", digits_csv, "-o", out, *flags, "--lr", "0.01"])
    assert other.code == 0, other.stderr
    assert other.stderr.startswith(
        f"aecli: {out} is a stopped run (epoch 2) of other flags or data; training afresh\n"
    )
    _train(digits_csv, fresh, *flags, "--lr", "0.01")
    assert out.read_bytes() == fresh.read_bytes()
    # Without --checkpoint-every a run never looks at what -o holds.
    with monkeypatch.context() as patch:
        signal_at_epoch(patch, 3)
        assert invoke(["train", digits_csv, "-o", out, *flags]).code == 130
    plain = invoke(["train", digits_csv, "-o", out, *LOUD, "--epochs", "4"])
    assert plain.code == 0 and "stopped run" not in plain.stderr
    assert modelfile.load(str(out)).summary["kept_epoch"] == 4


def test_the_api_refuses_a_config_that_is_not_the_resumed_models(
    tmp_path: Path, table_csv: Path
) -> None:
    """prepare(resume=...) must not write a file whose config does not describe its weights:
    a given model field must repeat the file's, a given training field may change."""
    from aecli.errors import UsageError
    from aecli.training import ModelRequest, prepare

    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--epochs", "2", "-q"]).code == 0
    resumed = modelfile.load(str(model))
    table = read_table(str(table_csv))
    wider = ModelRequest(latent=resumed.config.latent + 1)
    with pytest.raises(UsageError, match="--latent: cannot change on --resume"):
        prepare(table, wider, TrainConfig(epochs=4), given={"latent"}, resume=resumed)
    run = prepare(table, ModelRequest(), TrainConfig(epochs=4), given={"epochs"}, resume=resumed)
    fitted = run.execute().fitted
    assert fitted.config == resumed.config and fitted.summary["epochs"] == 4


def test_every_config_field_is_either_fixed_or_resumable() -> None:
    import dataclasses

    from aecli import training

    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    train_fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert set(training.FIXED_MODEL) == model_fields
    lists = [*training.FIXED_TRAIN, *training.RESUMABLE_TRAIN]
    assert sorted(lists) == sorted(train_fields)  # each once, none missing, none extra


def test_an_interrupt_during_the_divergence_check_keeps_the_model(
    tmp_path: Path, table_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the last epoch, ``train`` rebuilds the untrained network to tell whether the run
    diverged; Ctrl-C there escaped the statistics' guard and lost the run."""
    registered = models.MODELS["basic"]

    class InterruptedRebuild(registered):  # type: ignore[misc, valid-type]
        built = 0

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            InterruptedRebuild.built += 1
            if InterruptedRebuild.built == 2:  # the first is the run's network
                signal.raise_signal(signal.SIGINT)

    monkeypatch.setitem(models.MODELS, "basic", InterruptedRebuild)
    out = tmp_path / "m.safetensors"
    result = invoke(["train", table_csv, "-o", out, "--epochs", "3", "-q"])
    assert InterruptedRebuild.built >= 2
    assert result.code == 130, result.stderr
    assert "interrupted after epoch 3, before its statistics" in result.stderr
    assert modelfile.load(str(out)).summary["kept_epoch"] == 3


def test_an_interrupt_while_the_statistics_are_computed_keeps_the_model(
    tmp_path: Path, table_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F05: Ctrl-C after the last epoch, during PCA and the score percentiles, lost the run."""

    def interrupted(*args: object) -> None:  # Ctrl-C arriving inside the statistics step
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(baselines, "add_baselines", interrupted)
    out = tmp_path / "m.safetensors"
    result = invoke(["train", table_csv, "-o", out, "--epochs", "3", "-q"])
    assert result.code == 130
    assert "interrupted after epoch 3, before its statistics; the model of epoch 3 was saved" in (
        result.stderr
    )
    fitted = modelfile.load(str(out))
    assert fitted.summary["kept_epoch"] == 3 and fitted.code_stats is None
    assert invoke(["score", out, table_csv]).code == 0  # the error alone, as older files
    monkeypatch.undo()
    resumed = tmp_path / "r.safetensors"
    assert invoke(["train", table_csv, "--resume", out, "-o", resumed, "--epochs", "4"]).code == 0
    assert modelfile.load(str(resumed)).code_stats is not None
