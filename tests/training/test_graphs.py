"""CUDA graphs (training/_graphs.py): a replayed step trains the model the eager step trains."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from aecli.config import ModelConfig, TrainConfig
from aecli.models import build_model
from aecli.training._distributed import World
from aecli.training._fastpath import manual_step
from aecli.training._graphs import WARMUP_STEPS, graphed_step
from aecli.training._loop import History, fit, make_optimizer

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CONFIG = dict(n_inputs=24, hidden=(32,), latent=4)


def test_no_graph_off_cuda_or_where_the_step_needs_autograd() -> None:
    model = build_model(ModelConfig(**CONFIG))  # type: ignore[arg-type]
    assert graphed_step(model, make_optimizer(model, TrainConfig()), 32, "fp32", None) is None


@needs_cuda
@pytest.mark.gpu
def test_no_graph_for_autograd_kinds_several_ranks_or_when_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def graph(world: World | None = None, **kind: Any) -> object:
        model = build_model(ModelConfig(**CONFIG, **kind)).cuda()  # type: ignore[arg-type]
        return graphed_step(model, make_optimizer(model, TrainConfig()), 32, "fp32", None, world)

    assert graph() is not None
    assert graph(kind="sparse") is None and graph(tied=True) is None
    assert graph(World(0, 2, 0, 2)) is None
    monkeypatch.setenv("AECLI_CUDA_GRAPHS", "0")
    assert graph() is None


@needs_cuda
@pytest.mark.gpu
def test_the_step_is_captured_and_replayed_as_the_eager_step() -> None:
    torch.manual_seed(0)
    config = ModelConfig(**CONFIG)  # type: ignore[arg-type]
    graphed, eager = build_model(config).cuda(), build_model(config).cuda()
    eager.load_state_dict(graphed.state_dict())
    graph_opt = make_optimizer(graphed, TrainConfig())
    eager_opt = make_optimizer(eager, TrainConfig())
    graph = graphed_step(graphed, graph_opt, 32, "fp32", None)
    step = manual_step(eager, "fp32", eager)
    assert graph is not None and step is not None
    batches = torch.rand(WARMUP_STEPS + 4, 32, 24, device="cuda")
    losses = []
    for batch in batches:
        graph(batch)
        loss, _ = step(batch)
        eager_opt.step()
        losses.append(loss)
    assert graph.graph is not None  # replayed from the capture on
    for (name, value), other in zip(eager.state_dict().items(), graphed.state_dict().values()):
        assert torch.equal(value, other), (name, float((value - other).abs().max()))
    sums = graph.take()
    assert float(sums["loss"]) == pytest.approx(32 * float(sum(losses)), rel=1e-6)
    assert float(graph.take()["loss"]) == 0.0  # take() clears


CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "basic": ({}, {}),
    "dropout": ({"kind": "denoise", "noise": "dropout"}, {}),
    "gaussian": ({"kind": "denoise", "noise": "gaussian"}, {}),
    "vae, --beta-warmup": ({"kind": "vae"}, {"beta_warmup": 2}),  # captured again each epoch
    "bf16": ({"kind": "vae"}, {"precision": "bf16"}),
    "compiled": ({"kind": "vae"}, {"compile": True}),
}


def _fit(name: str, graphs: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, History]:
    model_kw, train_kw = CASES[name]
    monkeypatch.setenv("AECLI_CUDA_GRAPHS", "1" if graphs else "0")
    torch.manual_seed(0)
    model = build_model(ModelConfig(**CONFIG, **model_kw)).cuda()  # type: ignore[arg-type]
    rows = torch.rand(200, 24, generator=torch.Generator().manual_seed(1)).cuda()
    history = fit(model, rows, None, TrainConfig(epochs=3, batch_size=32, **train_kw))
    return model, history


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("name", list(CASES))
def test_training_with_graphs_gives_the_eager_model(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """6 full batches an epoch replayed, the 7th (8 rows) eager; noise draws included."""
    graphed, graphed_history = _fit(name, True, monkeypatch)
    eager, eager_history = _fit(name, False, monkeypatch)
    for (key, value), other in zip(eager.state_dict().items(), graphed.state_dict().values()):
        assert torch.equal(value, other), (key, float((value - other).abs().max()))
    for one, two in zip(eager_history.epochs, graphed_history.epochs, strict=True):
        assert one.terms == pytest.approx(two.terms, rel=1e-5)
