"""Shared fixtures: small datasets on disk and an in-process CLI runner."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from aecli import cli


def pytest_configure(config: pytest.Config) -> None:
    """Each xdist worker and each ATEN_CPU_CAPABILITY compiles into its own inductor cache.

    Two workers building torch.compile's precompiled header in one shared directory, or
    one built under another CPU capability, failed with "'at::vec' has not been declared".
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    capability = os.environ.get("ATEN_CPU_CAPABILITY", "native")
    cache = Path(tempfile.gettempdir()) / "aecli-tests-inductor" / capability / worker
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache))


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


def rewrite_model(
    source: Path, target: Path, edit: Callable[[dict[str, np.ndarray]], None]
) -> dict[str, np.ndarray]:
    """Write ``target`` as the model file ``source`` with its tensors changed by ``edit``
    (in place: a file of an older format, or a damaged one); returns the tensors before."""
    from safetensors.numpy import load_file

    from aecli import modelfile

    metadata, _, _ = modelfile.read_header(str(source))
    before = load_file(str(source))
    arrays = dict(before)
    edit(arrays)
    Path(target).write_bytes(modelfile.serialize(arrays, metadata))
    return before


def train_on(
    values: Any,
    config: Any,
    train: Any,
    on_epoch: Any = None,
    *,
    resume: Any = None,
    **execute: Any,
) -> tuple[Any, Any]:
    """``config``'s model (a ModelConfig as the spec) trained on ``values`` (an array or a
    Table) through aecli.training's one way in: the fitted model and its history."""
    import dataclasses

    from aecli.io import Table
    from aecli.training import ModelRequest, prepare

    table = values if isinstance(values, Table) else Table(values, None, (values.shape[1],))
    fields = dataclasses.asdict(config)
    image = fields.pop("image")
    request = ModelRequest.from_params({**fields, "image_shape": image or None})
    result = prepare(table, request, train, resume=resume).execute(on_epoch, **execute)
    return result.fitted, result.history


def signal_at_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int, sig: int = 2) -> None:
    """A real signal (SIGINT) arrives as epoch ``epoch`` starts, in an in-process CLI run.

    ``aecli train`` hands training ``signals.requested``, which a single process asks as
    each epoch starts; the ``epoch``-th ask sends the signal to this process, and its
    handler stops the run there as Ctrl-C would. Layer-wise stages count on.
    """
    import signal

    from aecli.cli import signals

    real, calls = signals.requested, [0]

    def requested() -> bool:
        calls[0] += 1
        if calls[0] == epoch:
            signal.raise_signal(sig)
        return real()

    monkeypatch.setattr(signals, "requested", requested)


# A score reads each term through the training rows' percentiles of it, and where many of
# them share one value (the neighbour distances of flags and counts), their percentiles rise
# over 1e-4 of it (tails.TIE_WIDTH): a distance that another CPU's matmul kernel rounds 1e-5
# apart (a subtraction of near-equal sums) moves a row's share by a tenth of that block, and
# its score by up to about 1%. Measured on format 5's golden rows (flags and shares; a quarter
# of its neighbour percentiles lie within 1e-4 of the next): an Intel Xeon's MKL paths,
# AVX-512 against SSE4.2, move one row's score by 0.27%, and either moves it 0.02% from the
# golden, where the test compared at 1e-5 and failed. A change in how a file's score is read
# moves it by far more (a floor, a term, a unit: 0.1 and up), so the score goldens compare at
# this tolerance.
SCORE_RTOL = 1e-2


def assert_same_table(actual: str, golden: str, rtol: float = 1e-5) -> None:
    """A CSV output equal to a golden one: the same text where text is exactly determined
    (header, ids, shape), and numbers within float32 rounding of a few ulps.

    Numbers are not compared as text: each CPU kernel (ATEN_CPU_CAPABILITY default, avx2,
    avx512, ARM) sums float32 in its own order, so the last digit differs between machines.
    ``atol`` is scaled to the table's largest value, for values that are sums near zero.
    """
    got, want = actual.splitlines(), golden.splitlines()
    assert len(got) == len(want), f"{len(got)} lines, golden has {len(want)}"
    assert got[0] == want[0], "header"
    scale = max(
        (abs(float(c)) for line in want[1:] for c in line.split(",") if _number(c)), default=1
    )
    for number, (line, expected) in enumerate(zip(got[1:], want[1:]), start=2):
        cells, golden_cells = line.split(","), expected.split(",")
        assert len(cells) == len(golden_cells), f"line {number}: {len(cells)} cells"
        for column, (cell, gold) in enumerate(zip(cells, golden_cells), start=1):
            if not _number(gold):
                assert cell == gold, f"line {number}, column {column}"
                continue
            assert _number(cell), f"line {number}, column {column}: {cell!r}"
            close = np.isclose(float(cell), float(gold), rtol=rtol, atol=scale * 1e-6)
            assert close, f"line {number}, column {column}: {cell} != {gold}"


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


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
