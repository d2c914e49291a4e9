"""Convolutional autoencoders (--arch conv): shapes, every kind, tied kernels, files, commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aecli import modelfile
from aecli.config import ModelConfig, TrainConfig, resolve_config
from aecli.errors import UsageError
from aecli.io import Table
from aecli.models import ConvAutoencoder, build_model
from tests.conftest import invoke, train_on


def _blobs(n: int, channels: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Images of one soft bright blob each, in [0, 1]: structure a conv model can learn."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    centres = rng.uniform([0, 0], [height, width], size=(n, channels, 2))
    d2 = (ys - centres[..., 0, None, None]) ** 2 + (xs - centres[..., 1, None, None]) ** 2
    return np.exp(-d2 / 4.0).astype(np.float32)


def _config(
    kind: str = "basic", image: tuple[int, int, int] = (1, 7, 9), **extra: object
) -> ModelConfig:
    n = image[0] * image[1] * image[2]
    return ModelConfig(
        kind=kind, n_inputs=n, latent=4, arch="conv", channels=(4, 8), image=image, **extra
    )


@pytest.fixture(scope="module")
def images_npy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("conv") / "blobs.npy"
    np.save(path, _blobs(240, 1, 7, 9)[:, 0])  # N x H x W, odd sizes
    return path


@pytest.mark.parametrize("image", [(1, 28, 28), (1, 8, 8), (1, 7, 9), (3, 5, 6), (4, 1, 1)])
@pytest.mark.parametrize("kind", ["basic", "sparse", "vae"])
@pytest.mark.parametrize("tied", [False, True])
def test_the_decoder_gives_back_exactly_h_x_w(
    image: tuple[int, int, int], kind: str, tied: bool
) -> None:
    config = _config(kind, image, tied=tied)
    model = build_model(config)
    x = torch.rand(3, config.n_inputs)
    assert model.reconstruct(x).shape == x.shape
    assert model.codes(x).shape == (3, 4)
    stored = sum(p.numel() for p in model.parameters())
    assert stored == config.parameters() if not tied else stored < config.parameters()


def test_grids_halve_rounding_up() -> None:
    config = _config(image=(1, 28, 28))
    assert config.conv_grids() == [(28, 28), (14, 14), (7, 7)]
    assert _config(image=(1, 7, 9)).conv_grids() == [(7, 9), (4, 5), (2, 3)]
    assert config.architecture() == "1x28x28-c4-c8-4-c8-c4-1x28x28"


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("basic", {}),
        ("basic", {"tied": True}),
        ("denoise", {"noise": "gaussian"}),
        ("denoise", {"noise": "dropout"}),
        ("sparse", {}),
        ("vae", {"loss": "bce"}),
        ("vae", {"loss": "mse"}),
        ("basic", {"loss": "bce"}),
    ],
)
def test_every_kind_trains_and_its_loss_falls(kind: str, extra: dict) -> None:
    values = _blobs(200, 1, 7, 9).reshape(200, -1)
    table = Table(values, None, (7, 9))
    config = resolve_config(
        kind, 63, hidden=None, latent=4, loss=extra.pop("loss", "auto"),
        noise=extra.pop("noise", "auto"), arch="conv", channels=(4, 8), image=(1, 7, 9), **extra,
    )  # fmt: skip
    fitted, history = train_on(table, config, TrainConfig(epochs=8, seed=1, batch_size=32))
    assert isinstance(fitted.model, ConvAutoencoder) or "Conv" in type(fitted.model).__name__
    first, last = history.epochs[0].terms["loss"], history.epochs[-1].terms["loss"]
    assert last < 0.9 * first, (first, last)


def test_tied_kernels_are_the_encoders() -> None:
    model = build_model(_config(tied=True))
    names = [name for name, _ in model.named_parameters()]
    assert not any(name.startswith("decoder.") for name in names)  # only decoder_bias.*
    z = torch.randn(2, 4)
    before = model.decode(z)
    with torch.no_grad():
        model.encoder[0].weight.mul_(2.0)  # the first conv's kernels are the last transposed conv's
    assert not torch.allclose(model.decode(z), before)
    model.zero_grad()
    model.decode(z).sum().backward()
    assert model.encoder[0].weight.grad is not None and model.encoder[0].weight.grad.abs().sum() > 0


def test_a_conv_model_round_trips_through_its_file(tmp_path: Path) -> None:
    values = _blobs(120, 2, 5, 6).reshape(120, -1)
    table = Table(values, None, (2, 5, 6))
    for kind in ("basic", "vae"):
        config = resolve_config(
            kind, 60, hidden=None, latent=3, loss="auto", noise="auto", arch="conv",
            channels=(3,), image=(2, 5, 6), tied=kind == "basic",
        )  # fmt: skip
        fitted, _ = train_on(table, config, TrainConfig(epochs=2, seed=0))
        path = tmp_path / f"{kind}.safetensors"
        modelfile.save(fitted, str(path))
        loaded = modelfile.load(str(path))
        assert loaded.config == fitted.config and loaded.config.arch == "conv"
        assert np.array_equal(loaded.encode(values), fitted.encode(values))
        assert np.array_equal(loaded.reconstruct(values), fitted.reconstruct(values))


def test_old_files_load_as_mlp() -> None:
    golden = Path(__file__).parent / "data" / "format1-basic.safetensors"
    assert modelfile.load(str(golden)).config.arch == "mlp"


def test_every_command_takes_a_conv_model(tmp_path: Path, images_npy: Path) -> None:
    model = tmp_path / "vae.safetensors"
    train = ["train", images_npy, "-o", model, "--arch", "conv", "--channels", "4,8"]
    result = invoke([*train, "--kind", "vae", "--latent", "3", "--epochs", "3", "-q"])
    assert result.code == 0, result.stderr
    info = json.loads(invoke(["info", model, "--json"]).text)
    assert info["model"]["arch"] == "conv" and info["model"]["image"] == [1, 7, 9]
    codes = invoke(["encode", model, images_npy])
    assert codes.code == 0 and codes.text.splitlines()[0] == "z0,z1,z2"
    recon = tmp_path / "recon.npy"
    assert invoke(["reconstruct", model, images_npy, "-o", recon]).code == 0
    assert np.load(recon).shape == (240, 7, 9)
    sample = invoke(["sample", model, "-n", "5"])
    assert sample.code == 0 and len(sample.text.splitlines()) == 6
    evaluate = json.loads(invoke(["evaluate", model, images_npy, "--json"]).text)
    assert evaluate["neg_elbo"] > 0
    scores = invoke(["score", model, images_npy])
    assert scores.code == 0 and len(scores.text.splitlines()) == 241
    line = invoke(["interpolate", model, images_npy, "--rows", "0,1", "--steps", "4"])
    assert line.code == 0 and len(line.text.splitlines()) == 5
    resumed = invoke(["train", images_npy, "-o", model, "--resume", model, "--epochs", "4", "-q"])
    assert resumed.code == 0, resumed.stderr
    assert modelfile.load(str(model)).summary["kept_epoch"] == 4
    pytest.importorskip("matplotlib")
    assert invoke(["features", model, "--grid", tmp_path / "f.png"]).code == 0
    assert invoke(["sample", model, "-n", "8", "--grid", tmp_path / "s.png"]).code == 0
    assert (tmp_path / "f.png").stat().st_size > 0 and (tmp_path / "s.png").stat().st_size > 0


def test_a_csv_names_its_image_shape_with_channels(tmp_path: Path) -> None:
    values = _blobs(60, 2, 4, 5).reshape(60, -1)
    data = tmp_path / "two-channel.csv"
    np.savetxt(data, values, delimiter=",", fmt="%.5f")
    model = tmp_path / "m.safetensors"
    args = ["train", data, "-o", model, "--arch", "conv", "--channels", "3", "--epochs", "2"]
    result = invoke([*args, "--image-shape", "2x4x5", "-q"])
    assert result.code == 0, result.stderr
    assert modelfile.load(str(model)).config.image == (2, 4, 5)


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        ([], "--arch conv"),  # a plain table has no image shape
        (["--image-shape", "2x5", "--hidden", "8"], "--hidden"),
        (["--image-shape", "2x5", "--channels", "0,4"], "--channels"),
        (["--image-shape", "2x5", "--channels", "a"], "--channels"),
        (["--image-shape", "2x2x3"], "--image-shape"),
    ],
)
def test_conv_flags_are_checked(table_csv: Path, tmp_path: Path, extra: list, flag: str) -> None:
    out = tmp_path / "m.safetensors"
    result = invoke(["train", table_csv, "-o", out, "--arch", "conv", *extra])
    assert result.code == 2 and flag in result.stderr, result.stderr
    assert not out.exists()


def test_validate_names_the_image_shape() -> None:
    with pytest.raises(UsageError, match="--image-shape"):
        ModelConfig(n_inputs=10, latent=2, arch="conv", channels=(2,), image=(1, 3, 3)).validate()


def test_the_python_api_trains_and_reloads_a_conv_model(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from aecli import Autoencoder

    values = _blobs(80, 1, 7, 9).reshape(80, -1)
    ae = Autoencoder(arch="conv", channels=(3,), image_shape=(7, 9), epochs=2).fit(values)
    ae.save(tmp_path / "m.safetensors")
    again = Autoencoder.load(str(tmp_path / "m.safetensors"))
    assert (again.arch, again.channels, again.image_shape) == ("conv", (3,), (7, 9))
    assert np.array_equal(again.transform(values), ae.transform(values))


@pytest.mark.parametrize(
    ("flags", "blamed"),
    [
        (["--arch", "conv", "--image-shape", "8x8", "--channels", "100000000"], "--channels"),
        (["--hidden", "100000000"], "--hidden"),
        (["--kind", "sparse", "--latent", "100000000"], "--latent"),
    ],
)
def test_a_model_too_big_blames_the_flag_that_made_it_so(
    tmp_path: Path, digits_csv: Path, flags: list[str], blamed: str
) -> None:
    """F3-13: --channels 100000000 was blamed on --latent, which was not given."""
    result = invoke(["train", digits_csv, "-o", tmp_path / "m.safetensors", "-q", *flags])
    assert result.code == 2
    assert result.stderr.startswith(f"aecli: error: {blamed}: a model of "), result.stderr


def test_a_conv_image_edited_away_from_the_row_shape_is_a_damaged_file(
    tmp_path: Path, digits: np.ndarray
) -> None:
    """F3-16: [1,8,8] edited to [1,4,16] (the same pixels) was used, its outputs changed."""
    from safetensors.numpy import load_file

    np.save(tmp_path / "img.npy", digits[:200].reshape(-1, 8, 8))
    model = tmp_path / "m.safetensors"
    args = ["train", tmp_path / "img.npy", "-o", model, "--arch", "conv", "--epochs", "1", "-q"]
    assert invoke(args).code == 0
    metadata, _, _ = modelfile.read_header(str(model))
    config = {**json.loads(metadata["aecli.model"]), "image": [1, 4, 16]}
    edited = tmp_path / "edited.safetensors"
    edited.write_bytes(modelfile.serialize(load_file(str(model)), {
        **metadata, "aecli.model": json.dumps(config)}))  # fmt: skip
    for command in (["info", edited], ["encode", edited, tmp_path / "img.npy"]):
        result = invoke(command)
        assert result.code == 1, result.stderr
        assert "the convolutions' image [1, 4, 16] is not the row shape 8x8" in result.stderr
