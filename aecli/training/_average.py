"""The weights a run keeps: a moving average over its epochs, not the last step's.

At a constant learning rate Adam does not settle at a minimum; it keeps moving about one,
by as much as the batches' noise pushes it, and where the last step happens to leave it is
drawn by the batch order, hence by ``--seed``. An average of the weights over the last
epochs sits nearer the centre of that motion (Polyak & Juditsky 1992; for networks,
stochastic weight averaging, Izmailov et al. 2018). Once the network starts from the rows'
principal components (``_start``), two seeds differ mostly by that noise, and averaging
measurably narrowed it (issue 39; docs/anomaly.md).

The average is exponential, per epoch, with a decay that grows with the epoch,
min(``DECAY``, (1 + e) / (10 + e)) (the warm-up of the moving averages in TensorFlow and
timm): early epochs, far from where training ends, soon weigh nothing, and at epoch 50 the
average reaches back some seven epochs. It depends on the epochs run so far and not on
``--epochs``, so a run stopped at any epoch and resumed to any target ends on the bytes of
a run that was never stopped: the average travels in the optimizer state, and a finished
file keeps its last step's weights there too, so that resuming it for more epochs goes on
from where training was, not from the average. Early stopping keeps its best epoch, and a
stopped run its last whole epoch, as before.
"""

from __future__ import annotations

import torch

from aecli.config import TrainConfig
from aecli.fitted import OptimizerState
from aecli.models import Autoencoder

DECAY = 0.9  # the most the average keeps of itself from one epoch to the next
AVERAGE, LAST = "average", "last"  # the optimizer state's entries: "{parameter}.average"


def decay(epoch: int) -> float:
    """How much of the average an epoch keeps: 0.18 after epoch 1, 0.85 after epoch 50."""
    return min(DECAY, (1.0 + epoch) / (10.0 + epoch))


class Average:
    """The moving average of the parameters, folded in after every epoch."""

    def __init__(
        self,
        model: Autoencoder,
        config: TrainConfig,
        start_epoch: int,
        saved: OptimizerState | None,
    ) -> None:
        self.on = not config.early_stopping
        self.count = 0
        self.mean: dict[str, torch.Tensor] = {}
        finished = saved is not None and any(k.endswith(f".{LAST}") for k in saved.moments)
        if self.on and saved is not None and saved.averaged == start_epoch - 1 > 0:
            self.count = saved.averaged  # stopped at the end of an epoch: the average goes on
            self.mean = {  # a finished file's model is its average
                name: (weight if finished else saved.moments[f"{name}.{AVERAGE}"])
                .detach()
                .to(weight.device, copy=True)
                for name, weight in model.named_parameters()
            }
        if finished and saved is not None:
            _continue_from_last(model, saved)

    @torch.no_grad()
    def add(self, model: Autoencoder, epoch: int) -> None:
        """Fold in the weights at the end of ``epoch``: mean = d mean + (1 - d) w."""
        if not self.on:
            return
        keep = decay(epoch) if self.count else 0.0
        self.count += 1
        for name, weight in model.named_parameters():
            if not keep:
                self.mean[name] = weight.detach().clone()
            else:
                self.mean[name].lerp_(weight.detach(), 1.0 - keep)

    @torch.no_grad()
    def apply(self, model: Autoencoder) -> dict[str, torch.Tensor] | None:
        """Put the average into ``model`` (after its last epoch); the last step's weights, or
        None where nothing is averaged."""
        if not self.count:
            return None
        last = {name: w.detach().clone() for name, w in model.named_parameters()}
        for name, weight in model.named_parameters():
            weight.copy_(self.mean[name])
        return last

    def state(
        self, state: OptimizerState, last: dict[str, torch.Tensor] | None = None
    ) -> OptimizerState:
        """``state`` with the average so far; once the model holds it (``apply``), with the
        last step's weights instead: one copy of the weights fewer in the file."""
        if not self.count:
            return state
        if last is not None:
            kept = {f"{name}.{LAST}": value for name, value in last.items()}
        else:
            kept = {f"{name}.{AVERAGE}": value.clone() for name, value in self.mean.items()}
        return OptimizerState(state.step, {**state.moments, **kept}, self.count)


@torch.no_grad()
def _continue_from_last(model: Autoencoder, saved: OptimizerState) -> None:
    """A finished, averaged run resumed for more epochs goes on from its last step."""
    for name, weight in model.named_parameters():
        last = saved.moments.get(f"{name}.{LAST}")
        if last is not None:
            weight.copy_(last)
