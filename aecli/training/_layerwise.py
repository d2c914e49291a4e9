"""Training a stack one shallow autoencoder at a time, then fine-tuning it whole.

Géron's "Training One Autoencoder at a Time": the first hidden layer and its
mirror are trained as a shallow autoencoder on the input; the next layer and
its mirror on the first one's codes (which stay fixed); and so on to the
coding layer. Each stage trains the very layers of the final model in place,
so stacking them is free, and the whole stack is then fine-tuned. Deep
stacks that start from a poor random initialisation can get stuck; each
shallow problem is easy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aecli import losses
from aecli.config import Loss, TrainConfig
from aecli.errors import UsageError
from aecli.models import Autoencoder, SparseAutoencoder

FINETUNE = "fine-tune"


class Stage(nn.Module):
    """One encoder layer of the model and its mirror decoder layer, as a shallow autoencoder."""

    def __init__(self, model: Autoencoder, index: int) -> None:
        super().__init__()
        depth = len(model.encoder)
        self.encoder_layer = model.encoder[index]
        self.decoder_layer = model.decoder[depth - 1 - index]
        self.model = [model]  # not a submodule: only this stage's two layers train
        self.first = index == 0
        self.coding = index == depth - 1
        self.sparse = self.coding and isinstance(model, SparseAutoencoder)
        self.share = None  # the trainer's hooks, as on a model
        self.kl_weight = 1.0
        sizes = model.config.sizes
        self.label = (
            f"layer {index + 1} of {depth}: {sizes[index]}-{sizes[index + 1]}-{sizes[index]}"
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        model = self.model[0]
        h = self.encoder_layer(x)
        if self.sparse:
            return torch.sigmoid(h)
        return h if self.coding else model.act(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model = self.model[0]
        if self.first and self.training:
            model.train()
            codes = self.encode(model.corrupt(x))  # denoising corrupts the input only
        else:
            codes = self.encode(x)
        out = self.decoder_layer(codes)
        if not self.first:
            out = model.act(out)  # the mirror of a hidden layer feeds the next decoder layer
        if self.first and model.config.loss == Loss.bce:
            reconstruction = F.binary_cross_entropy_with_logits(out, x)
        else:
            reconstruction = F.mse_loss(out, x)
        if not self.sparse:
            return reconstruction, {"reconstruction": reconstruction}
        config = model.config
        sparsity = losses.sparsity_penalty(codes, config.sparsity_target)
        loss = reconstruction + config.sparsity_weight * sparsity
        return loss, {"reconstruction": reconstruction, "sparsity": sparsity}


@dataclasses.dataclass
class Pretrained:
    """What the stages reached, and the History of the stage a signal stopped (else None).

    A stopped stage leaves the stack as it stood, its last finished epoch in place: a
    usable model, saved like any stopped run, though the stages cannot be resumed.
    """

    stages: list[dict[str, Any]]
    stopped: Any = None


def pretrain(
    model: Autoencoder,
    train: torch.Tensor,
    val: torch.Tensor | None,
    config: TrainConfig,
    fit: Callable[..., Any],
    on_epoch: Callable[[Any], None] | None,
    on_checkpoint: Callable[[Any], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Pretrained:
    """Train each layer pair in turn on the codes below it; return what each stage reached.

    ``on_checkpoint`` receives a stage's epoch every ``checkpoint_every`` epochs (the
    stack as it stands then is the checkpoint).
    """
    stages: list[dict[str, Any]] = []
    inputs, held_out = train, val
    last = None  # the last finished epoch of any stage
    for index in range(len(model.encoder)):
        stage = Stage(model, index).to(train.device)

        def tagged(stats: Any, label: str = stage.label) -> None:
            if on_epoch is not None:
                on_epoch(dataclasses.replace(stats, stage=label))

        def checkpoint(stats: Any, _state: Any, label: str = stage.label) -> None:
            if on_checkpoint is not None:  # the stage's own Adam state is not the model's
                on_checkpoint(dataclasses.replace(stats, stage=label))

        history = fit(
            stage,
            inputs,
            held_out,
            config,
            tagged,
            on_checkpoint=checkpoint,
            stop_requested=should_stop,
        )
        if history.stop == "interrupted":
            kept = dataclasses.replace(history.kept, stage=stage.label) if history.epochs else last
            if kept is None:  # not one epoch finished: nothing to save
                raise KeyboardInterrupt
            history.epochs, history.best_epoch = [kept], None
            history.message = (
                f"interrupted during {stage.label}, before the fine-tune (layer-wise stages "
                "cannot be resumed)"
            )
            return Pretrained(stages, history)
        if history.stop is not None and history.stop != "early-stopping":
            raise UsageError(f"{stage.label}: {history.message}", flag="--layerwise")
        kept = history.kept
        last = dataclasses.replace(kept, stage=stage.label)
        stages.append({"stage": stage.label, "epochs": kept.epoch, "loss": kept.terms["loss"]})
        stage.eval()
        with torch.no_grad():  # the next stage learns to reconstruct these codes
            inputs = stage.encode(inputs)
            held_out = stage.encode(held_out) if held_out is not None else None
    return Pretrained(stages)


def finetune_config(config: TrainConfig) -> TrainConfig:
    """The whole stack trains for --finetune-epochs (default: --epochs)."""
    return dataclasses.replace(config, epochs=config.finetune_epochs or config.epochs)
