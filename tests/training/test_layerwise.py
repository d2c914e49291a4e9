"""A layer-wise stage: the model's own layers, trained as a shallow autoencoder."""

from __future__ import annotations

import torch

from aecli.config import ModelConfig
from aecli.models import build_model
from aecli.training._layerwise import Stage


def test_a_stage_trains_the_models_own_layers() -> None:
    model = build_model(ModelConfig(n_inputs=6, hidden=(4,), latent=2))
    stage = Stage(model, 1)
    own = {id(p) for p in stage.parameters()}
    assert own == {id(p) for p in [*model.encoder[1].parameters(), *model.decoder[0].parameters()]}
    x = torch.rand(5, 4)
    loss, _ = stage(x)
    loss.backward()
    assert model.encoder[1].weight.grad is not None and model.encoder[0].weight.grad is None
