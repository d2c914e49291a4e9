"""aecli.training's face: one request checked once, before any row; one run however it is called."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from aecli.choices import Activation, Arch, Kind, Loss, Noise
from aecli.config import ModelConfig, TrainConfig
from aecli.errors import UsageError
from aecli.io import Table
from aecli.scaler import Scaler
from aecli.training import ModelRequest, prepare
from tests.conftest import invoke


def test_request_defaults_are_the_model_configs() -> None:
    request, config = ModelRequest(), ModelConfig()
    for name in ("kind", "arch", "tied", "activation", "noise_std", "dropout", "beta",
                 "sparsity_target", "sparsity_weight"):  # fmt: skip
        assert getattr(request, name) == getattr(config, name), name


def test_request_takes_strings_as_its_enums_and_refuses_unknown_ones_once() -> None:
    request = ModelRequest(kind="vae", loss="bce", noise="dropout", arch="conv", activation="relu")
    assert (request.kind, request.loss, request.noise) == (Kind.vae, Loss.bce, Noise.dropout)
    assert (request.arch, request.activation) == (Arch.conv, Activation.relu)
    with pytest.raises(UsageError, match="unknown kind 'deep'; valid kinds: basic, denoise"):
        ModelRequest(kind="deep")
    with pytest.raises(UsageError, match="--noise"):
        ModelRequest(noise="salt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_prepare_refuses_a_bad_run_before_reading_a_row(tmp_path) -> None:
    missing = str(tmp_path / "not-there.csv")  # reading it would be a different error
    with pytest.raises(UsageError, match="--device"):
        prepare(missing, ModelRequest(), TrainConfig(device="cuda"))
    with pytest.raises(UsageError, match="--lr"):
        prepare(missing, ModelRequest(), TrainConfig(lr=-1.0))


def _table(rows: int = 120, width: int = 6) -> Table:
    values = np.random.default_rng(0).normal(size=(rows, width)).astype(np.float32)
    return Table(values, None, (width,))


@pytest.mark.parametrize("hidden", [None, (5, 4)])
def test_the_epochs_a_bar_counts_are_the_epochs_run(hidden) -> None:
    config = TrainConfig(epochs=2, finetune_epochs=1, layerwise=True, batch_size=32)
    run = prepare(_table(), ModelRequest(hidden=hidden, latent=2), config)
    seen = []
    run.execute(on_epoch=seen.append)
    assert len(seen) == run.epochs_in_all() == (len(hidden or (1,)) + 1) * 2 + 1


def test_image_shape_is_checked_against_the_rows() -> None:
    run = prepare(_table(width=6), ModelRequest(image_shape=(2, 4)), TrainConfig(epochs=1))
    with pytest.raises(UsageError, match="2x4 is 8 values, but rows have 6"):
        run.execute()


def test_a_vaes_auto_loss_follows_the_scaled_numbers_not_the_reasons_words() -> None:
    unit = np.random.default_rng(1).uniform(size=(200, 4)).astype(np.float32)
    scaler = Scaler.fit_chunks([unit], "auto")
    assert scaler.method == "none" and scaler.unit_range
    assert dataclasses.replace(scaler, reason="reworded", bounds=scaler.bounds).unit_range
    wide = Scaler.fit_chunks([unit * 3.0], "none")
    assert not wide.unit_range  # a hand-chosen none on [0, 3]
    request = ModelRequest(kind="vae")
    assert request.resolve(4, (4,), scaler).loss == "bce"
    wide = unit * 3.0 - 1.0
    robust = Scaler.fit_chunks([wide], "auto", sample=wide)
    assert request.resolve(4, (4,), robust).loss == "mse"  # robustly scaled: Gaussian decoder


def test_layerwise_refusals_come_before_any_row_is_read(tmp_path: Path) -> None:
    """Issue 38: --layerwise --kind vae was refused only after the rows, scaler and model."""
    missing = tmp_path / "nowhere.csv"
    for flags in (["--kind", "vae"], ["--arch", "conv"], ["--tied"], ["--hidden", "none"]):
        result = invoke(["train", missing, "--layerwise", *flags, "-o", tmp_path / "m.st"])
        assert result.code == 2 and result.stderr.startswith("aecli: error: --layerwise:"), (
            flags,
            result.stderr,
        )


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--sparsity-weight", "0.3"], "--sparsity-weight: is for --kind sparse"),
        (["--kind", "denoise", "--dropout", "0.2"], "--dropout: is for --noise dropout"),
        (["--beta-warmup", "3"], "--beta-warmup: is for --kind vae"),
        (["--channels", "8"], "--channels: is for --arch conv"),
        (["--finetune-epochs", "2"], "--finetune-epochs: is for --layerwise"),
    ],
)
def test_a_flag_made_meaningless_is_refused_before_any_row_is_read(
    tmp_path: Path, flags: list[str], line: str
) -> None:
    """Issue 38: every rule the request knows runs in prepare, so a missing file is not
    even opened: the flag's error comes first."""
    result = invoke(["train", tmp_path / "nowhere.csv", *flags, "-o", tmp_path / "m.st"])
    assert result.code == 2 and result.stderr.startswith(f"aecli: error: {line}"), result.stderr


def test_what_a_resumed_file_fixes_is_checked_before_any_row_is_read(
    tmp_path: Path, basic_model: Path
) -> None:
    missing = tmp_path / "nowhere.csv"
    result = invoke(["train", missing, "--resume", basic_model, "--kind", "vae", "-o", "m.st"])
    assert result.code == 2 and "--kind: cannot change on --resume" in result.stderr
    assert "the model file has 'basic', not 'vae'" in result.stderr


def test_the_fields_are_listed_once_and_taken_from_any_mapping() -> None:
    """The CLI's flags and the estimator's parameters build the request and the config
    through from_params; keys that are neither (output, quiet...) are left out."""
    params = {"kind": "VAE", "latent": 3, "epochs": 4, "compile_model": False, "quiet": True}
    request = ModelRequest.from_params(params)
    assert (request.kind, request.latent) == (Kind.vae, 3)
    config = TrainConfig.from_params(params)
    assert (config.epochs, config.compile) == (4, False)
    assert {f.name for f in dataclasses.fields(ModelRequest)} - set(vars(ModelConfig())) == {
        "image_shape"
    }


def test_a_request_refused_by_prepare_loads_no_torch() -> None:
    """Every check prepare makes before the device is torch-free: a mistyped flag answers
    at once, and the layer-wise refusals are among them."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from aecli.config import TrainConfig\n"
        "from aecli.errors import UsageError\n"
        "from aecli.training import ModelRequest, prepare\n"
        "for request, config in ((ModelRequest(), TrainConfig(beta_warmup=2)),\n"
        "                        (ModelRequest(kind='vae'), TrainConfig(layerwise=True))):\n"
        "    try:\n"
        "        prepare('x.csv', request, config)\n"
        "    except UsageError as exc:\n"
        "        print(exc)\n"
        "assert 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "--beta-warmup: is for --kind vae (it weighs the latent loss)",
        "--layerwise: is for --arch mlp without --tied, kinds basic, denoise and sparse",
    ]


def test_a_run_gives_the_caller_its_thread_count_back() -> None:
    """A small model trains on one thread and its statistics on more; a notebook's torch
    keeps the thread count it had (a fit left it at one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # neither the one thread training takes nor the cores
    try:
        prepare(_table(), ModelRequest(latent=2), TrainConfig(epochs=1)).execute()
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_the_batch_size_and_rate_are_chosen_for_the_table() -> None:
    """Batches of 64 at 3e-3 below 4096 rows; 128 at 6e-3 from there (the same fit in less
    time); a given batch size keeps 3e-3 unless the rate is given too. The file says which."""
    sized = TrainConfig().sized
    assert (sized(4095).batch_size, sized(4095).lr) == (64, 3e-3)
    assert (sized(4096).batch_size, sized(4096).lr) == (128, 6e-3)
    assert TrainConfig(batch_size=32).sized(10**6).lr == 3e-3
    assert TrainConfig(lr=1e-3).sized(10**6).batch_size == 128
    for rows, expected in ((1000, (64, 3e-3)), (4200, (128, 6e-3))):
        run = prepare(_table(rows=rows), ModelRequest(latent=2), TrainConfig(epochs=1))
        kept = run.execute().fitted.train_config
        assert (kept.batch_size, kept.lr) == expected


def test_a_flag_left_out_takes_the_configs_default_through_from_params() -> None:
    """The CLI passes None for --batch-size and --lr left out: the config's 0, chosen later."""
    config = TrainConfig.from_params({"batch_size": None, "lr": None, "epochs": 3})
    assert (config.batch_size, config.lr, config.epochs) == (0, 0.0, 3)
