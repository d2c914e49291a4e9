"""The loop's own guarantees, on a built model: what a NaN loss or a stop leaves behind.

Tests of aecli/training's private modules live under tests/training/, as scikit-learn's
subpackages keep theirs beside them; every other test goes through the package's face.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from aecli.config import ModelConfig, TrainConfig
from aecli.models import Autoencoder, build_model
from aecli.training import _loop
from aecli.training._loop import evaluate_loss, fit
from aecli.training._steps import TrainingStep


def _model_and_data() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_inputs=6, hidden=(5,), latent=2))
    return model, torch.rand(64, 6)


def test_non_finite_loss_keeps_the_last_good_epoch() -> None:
    """Epoch 1 ends, then its weights turn NaN (as an overflowing step leaves them): epoch
    2's loss is NaN, and the model goes back to epoch 1's weights."""
    model, x = _model_and_data()
    after_first: dict[str, torch.Tensor] = {}

    def poison(stats: Any) -> None:
        if stats.epoch == 1:
            after_first.update({k: v.clone() for k, v in model.state_dict().items()})
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float("nan"))

    history = fit(model, x, None, TrainConfig(epochs=5, batch_size=16), poison)
    assert history.stop == "non-finite" and len(history.epochs) == 1
    assert "lower --lr" in history.message
    for name, value in model.state_dict().items():
        assert torch.equal(value, after_first[name])


class _CutWhileKept(Autoencoder):
    """A model whose ``n``-th ``state_dict`` is cut by Ctrl-C: a signal landing while the
    loop copies an epoch's weights."""

    def __init__(self, config: ModelConfig, n: int) -> None:
        super().__init__(config)
        self.calls, self.n = 0, n

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return super().state_dict(*args, **kwargs)


def test_a_stop_while_an_epoch_is_being_kept_leaves_the_previous_epoch() -> None:
    """A signal landing between an epoch's stats and its snapshot: both say epoch 1.

    It happened to a SIGTERM about once in fifteen runs of test_resume: the saved file
    held epoch 1's weights labelled epoch 2, and its resume differed from a whole run.
    """
    torch.manual_seed(0)
    x = torch.rand(64, 6)
    config = TrainConfig(epochs=3, batch_size=16, seed=1)
    spec = ModelConfig(n_inputs=6, hidden=(4,), latent=2)
    # Both the same class, so that both take the same step (autograd: a subclass gets no
    # hand-written one), whose roundings MKL's AVX2 and AVX-512 paths may each change.
    reference = _CutWhileKept(spec, 0)  # never cut
    model = _CutWhileKept(spec, 3)  # the start, epoch 1, then epoch 2: cut there
    model.load_state_dict(reference.state_dict())
    fit(reference, x, None, TrainConfig(epochs=1, batch_size=16, seed=1))
    history = fit(model, x, None, config)
    assert history.stop == "interrupted" and [e.epoch for e in history.epochs] == [1]
    assert history.message == "interrupted during epoch 2"
    assert history.optimizer_state is not None and history.optimizer_state.step == 4
    for name, value in model.state_dict().items():
        assert torch.equal(value, reference.state_dict()[name]), name


def test_should_stop_stops_as_ctrl_c_does_between_epochs() -> None:
    """The caller's ``stop_requested``, asked as each epoch starts: yes before epoch 3
    keeps epochs 1 and 2, as Ctrl-C there would."""
    model, x = _model_and_data()
    asked: Iterator[bool] = iter([False, False, True])
    history = fit(model, x, None, TrainConfig(epochs=5, batch_size=16), None,
                  stop_requested=lambda: next(asked))  # fmt: skip
    assert history.stop == "interrupted" and [e.epoch for e in history.epochs] == [1, 2]
    assert history.message == "interrupted during epoch 3"


def test_the_default_vae_writes_its_own_gradients() -> None:
    """The step chosen for a default vae is the hand-written one (test_fastpath pins it to
    losses.py); autograd is for the kinds without one."""
    vae = build_model(ModelConfig(kind="vae", n_inputs=8, hidden=(6,), latent=2))
    from aecli.training._loop import make_optimizer

    config = TrainConfig(batch_size=32)
    assert TrainingStep.choose(vae, make_optimizer(vae, config), config).manual is not None
    sparse = build_model(ModelConfig(kind="sparse", n_inputs=8, hidden=(6,), latent=2))
    assert TrainingStep.choose(sparse, make_optimizer(sparse, config), config).manual is None


FAULTS_PER_STEP = """
import resource, torch
from aecli.config import ModelConfig, TrainConfig
from aecli.training import keep_freed_memory
from aecli.models import build_model
from aecli.training._loop import _train_epoch, make_optimizer
assert keep_freed_memory()
torch.manual_seed(0)
model = build_model(ModelConfig(n_inputs=784, hidden=(512, 256), latent=32))
optimizer = make_optimizer(model, TrainConfig(batch_size=256))
data = torch.rand(256 * 60, 784)
_train_epoch(model, optimizer, data, 256)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):
    _train_epoch(model, optimizer, data, 256)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 120)
"""

# A step's worth of tensors (200 of 300 kB), freed and taken again: glibc's defaults
# give them back (mmap, then a trimmed heap top), so every round faults fresh pages.
FAULTS_PER_ROUND = """
import resource, sys, torch
from aecli.training import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
def round_():
    blocks = [torch.ones(75_000) for _ in range(200)]
for _ in range(2):
    round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    round_()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
"""


def _faults(script: str, *args: str) -> float:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return float(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_spares_the_page_faults_of_every_step() -> None:
    """aecli train keeps freed memory: a step's tensors reuse pages instead of faulting new ones.

    Training itself under glibc's defaults faults 50-300 pages a step, but not always:
    glibc raises its mmap threshold as blocks come back, and some runs reach ~0 on
    their own. The comparison with the defaults is therefore made on a pattern whose
    outcome is fixed (60 MB in 300 kB blocks, taken and freed); training is held to
    the kept figure alone.
    """
    assert _faults(FAULTS_PER_STEP) < 10
    default, kept = _faults(FAULTS_PER_ROUND, "default"), _faults(FAULTS_PER_ROUND, "kept")
    assert default > 5000 and kept < 100, (default, kept)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ),
    ],
)
def test_reseed_gives_the_streams_torch_manual_seed_gives(device: str) -> None:
    """The run's draws (initial weights on the CPU, noise and shuffles where it trains) are
    what they were with torch.manual_seed, which also seeds every other accelerator."""
    from aecli.training._loop import reseed

    torch.manual_seed(11)
    want = torch.rand(5), torch.rand(5, device=device)
    torch.manual_seed(999)  # some other state between
    reseed(11, torch.device(device))
    got = torch.rand(5), torch.rand(5, device=device)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_validation_loss_is_the_rows_mean_loss_whatever_the_blocks() -> None:
    """Validation rows go through in blocks of _loop.EVAL_VALUES values, not training
    batches: 65,536-wide rows in blocks of 16 (three blocks of 40 rows) or in one of the
    batch's 64 rows, the loss is the mean over the rows of each row's loss."""
    torch.manual_seed(0)
    width = 1 << 16
    assert _loop.EVAL_VALUES // width == 16
    model = build_model(ModelConfig(n_inputs=width, latent=2))
    val = torch.rand(40, width)
    with torch.no_grad():
        model.eval()
        each = [float(model(val[i : i + 1])[0]) for i in range(len(val))]
    mean = sum(each) / len(each)
    assert evaluate_loss(model, val, 4) == pytest.approx(mean, rel=1e-5)
    assert evaluate_loss(model, val, 64) == pytest.approx(mean, rel=1e-5)
