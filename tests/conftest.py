"""Shared fixtures: small datasets on disk and an in-process CLI runner."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aecli import cli


@dataclass
class Outcome:
    code: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode()


def invoke(args: list[str], input: bytes | str | None = None) -> Outcome:
    """Run ``aecli ARGS`` in-process through the real entry point (``cli.main``)."""
    runner = CliRunner()
    with runner.isolation(input=input) as (out, err, _):
        code = cli.main([str(a) for a in args])
        sys.stdout.flush()
        sys.stderr.flush()
        return Outcome(code, out.getvalue(), err.getvalue().decode())


@pytest.fixture(scope="session")
def digits() -> np.ndarray:
    """The shipped digits as an N x 64 float32 array."""
    from aecli import datasets

    return datasets.load("digits").values


@pytest.fixture(scope="session")
def digits_csv(tmp_path_factory: pytest.TempPathFactory, digits: np.ndarray) -> Path:
    """The first 400 digits as a CSV with a header (p0..p63)."""
    path = tmp_path_factory.mktemp("data") / "digits.csv"
    header = ",".join(f"p{i}" for i in range(64))
    np.savetxt(path, digits[:400], delimiter=",", fmt="%g", header=header, comments="")
    return path


@pytest.fixture(scope="session")
def table() -> np.ndarray:
    """300 rows x 10 columns with a 3-dimensional structure plus noise."""
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(300, 3))
    mixing = rng.normal(size=(3, 10))
    return (latent @ mixing + 0.05 * rng.normal(size=(300, 10)) + 5.0).astype(np.float32)


@pytest.fixture(scope="session")
def table_csv(tmp_path_factory: pytest.TempPathFactory, table: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("data") / "table.csv"
    header = ",".join(f"f{i}" for i in range(table.shape[1]))
    np.savetxt(path, table, delimiter=",", fmt="%.6f", header=header, comments="")
    return path


FAST = ["--epochs", "3", "--batch-size", "64", "--quiet"]


@pytest.fixture(scope="session")
def basic_model(tmp_path_factory: pytest.TempPathFactory, digits_csv: Path) -> Path:
    path = tmp_path_factory.mktemp("models") / "basic.safetensors"
    result = invoke(["train", digits_csv, "-o", path, "--latent", "8", *FAST])
    assert result.code == 0, result.stderr
    return path


@pytest.fixture(scope="session")
def vae_model(tmp_path_factory: pytest.TempPathFactory, digits_csv: Path) -> Path:
    path = tmp_path_factory.mktemp("models") / "vae.safetensors"
    # --scale minmax: these tests check the Bernoulli (bce) decoder, which needs [0, 1];
    # auto would scale this 64-column CSV robustly and give the vae a Gaussian decoder.
    args = ["--kind", "vae", "--latent", "4", "--scale", "minmax"]
    result = invoke(["train", digits_csv, "-o", path, *args, *FAST])
    assert result.code == 0, result.stderr
    return path
