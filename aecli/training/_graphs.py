"""Training steps replayed from a CUDA graph: one launch a step instead of dozens.

A small autoencoder's step on a GPU is some 30-60 tiny kernels (products,
activations, their gradients, the loss, Adam); each costs the GPU a few
microseconds of work and the CPU more to launch, so the GPU mostly waits on
Python. A CUDA graph records the step's kernels once and replays them with one
call. The replayed kernels are the eager ones, reading the same addresses, so a
replay computes what the eager step computes, random draws included: PyTorch's
generator hands a captured graph the current seed and offset at every replay
and advances the offset as the eager kernels would (``torch.cuda.graph``).

What a replay cannot change is baked in at capture: the batch's size (the last,
smaller batch of an epoch runs eagerly), Python numbers such as the VAE's
latent-loss weight (a changed ``--beta-warmup`` weight captures again) and
tensor addresses (the batch is copied into one static buffer). Used for the
hand-written step (aecli/training/_fastpath.py) on one CUDA device; AECLI_CUDA_GRAPHS=0
turns it off.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from aecli.models import Autoencoder
from aecli.training._distributed import World
from aecli.training._fastpath import Step, manual_step
from aecli.training._optim import FusedAdam

# Eager steps before the capture, on a side stream as torch.cuda.graph asks: the first
# calls allocate cuBLAS workspaces and load kernels, which a capture must not do.
WARMUP_STEPS = 3


def wanted(device: torch.device) -> bool:
    """Graphs on CUDA, unless AECLI_CUDA_GRAPHS=0 (an escape hatch; the eager baseline)."""
    return device.type == "cuda" and os.environ.get("AECLI_CUDA_GRAPHS", "1") != "0"


def on_side_stream(run: Callable[[], None], device: torch.device) -> None:
    """``run`` on a side stream that waits for the current one and is waited for after.

    How torch.cuda.graph asks for the eager warm-up calls before a capture.
    """
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream(device).wait_stream(side)


class GraphedStep:
    """Full batches of ``rows`` rows: the step, Adam and the running loss sums, replayed.

    ``key`` is read before every step; when it changes (the VAE's latent weight) the
    step is captured again. The loss terms of the graphed steps add up in ``sums``
    on the device; ``take()`` reads and clears them once an epoch.
    """

    def __init__(
        self,
        step: Step,
        optimizer: FusedAdam,
        rows: int,
        width: int,
        device: torch.device,
        key: Callable[[], object] = lambda: None,
    ) -> None:
        self.step = step
        self.optimizer = optimizer
        self.rows = rows
        self.key = key
        self.static = torch.empty(rows, width, device=device)
        self.sums: torch.Tensor | None = None
        self.names: list[str] = []
        self.graph: torch.cuda.CUDAGraph | None = None
        self.captured_key: object = None
        self.warm = 0

    def _body(self, batch: torch.Tensor) -> None:
        loss, terms = self.step(batch)
        self.optimizer.step()
        if self.sums is None:
            self.names = ["loss", *terms]
            self.sums = torch.zeros(len(self.names), device=batch.device)
        self.sums.add_(torch.stack([loss, *terms.values()]), alpha=batch.shape[0])

    def __call__(self, batch: torch.Tensor) -> None:
        """One training step on a full batch (``rows`` rows)."""
        key = self.key()
        if self.graph is not None and key == self.captured_key:
            self.static.copy_(batch)
            self.graph.replay()
            return
        if self.warm < WARMUP_STEPS:
            on_side_stream(lambda: self._body(batch), batch.device)
            self.warm += 1
            return
        self.static.copy_(batch)
        self.graph = None  # a stale graph's memory goes back before the new capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._body(self.static)
        graph.replay()  # capturing records the kernels without running them
        self.graph, self.captured_key = graph, key

    def take(self) -> dict[str, torch.Tensor]:
        """The loss terms summed over the graphed steps since the last take, then cleared."""
        if self.sums is None:
            return {}
        sums = self.sums.clone()
        self.sums.zero_()
        return dict(zip(self.names, sums))


def graphed_step(
    model: Autoencoder,
    optimizer: FusedAdam,
    batch_size: int,
    precision: str,
    manual: Step | None,
    world: World | None = None,
) -> GraphedStep | None:
    """The training step as a GraphedStep, where one can run it; else None.

    On one CUDA device, for the hand-written step (``manual``, or the eager one).
    Several processes exchange gradients mid-step through NCCL: left eager.
    """
    device = next(model.parameters()).device
    if (world is not None and world.many) or not wanted(device):
        return None
    step = manual or manual_step(model, precision, model)
    if step is None:
        return None
    return GraphedStep(
        step, optimizer, batch_size, model.config.n_inputs, device, key=lambda: model.kl_weight
    )
