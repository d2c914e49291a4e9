"""aecli's FusedAdam against torch.optim.Adam(fused=True): the same updates, bit for bit."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from aecli.training._optim import FusedAdam


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_fused_adam_matches_torch_adam(weight_decay: float) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ELU(), torch.nn.Linear(7, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ELU(), torch.nn.Linear(7, 3))
    twin.load_state_dict(model.state_dict())
    ours = FusedAdam(model.parameters(), lr=3e-3, weight_decay=weight_decay)
    theirs = torch.optim.Adam(twin.parameters(), lr=3e-3, weight_decay=weight_decay, fused=True)
    for _ in range(25):
        x = torch.randn(16, 5)
        for net, opt in ((model, ours), (twin, theirs)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    state = theirs.state_dict()["state"]
    assert ours.step_count == int(state[0]["step"]) == 25
    assert torch.equal(ours.exp_avg_sq[0], state[0]["exp_avg_sq"])


def test_training_does_not_import_dynamo() -> None:
    """torch.optim.Adam would import torch._dynamo: about a second at every start."""
    code = (
        "import sys, numpy as np; from aecli.io import Table;"
        "from aecli.config import TrainConfig;"
        "from aecli.training import ModelRequest, prepare;"
        "x = np.random.default_rng(0).random((50, 4), dtype=np.float32);"
        "prepare(Table(x, None, (4,)), ModelRequest(hidden=(3,), latent=2),"
        " TrainConfig(epochs=2)).execute();"
        "assert 'torch._dynamo' not in sys.modules, 'dynamo imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
