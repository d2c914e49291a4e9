"""Adam as one fused kernel call per step, without torch.optim.

``torch.optim.Adam`` imports ``torch._dynamo`` when it is built (about one
second, more than training takes on small tables). This class keeps the
same state (exp_avg, exp_avg_sq and a float step count per parameter) and
calls the same fused kernel, ``torch._fused_adam_``, so its updates are bit
for bit those of ``torch.optim.Adam(fused=True)`` (tests/test_optim.py).

``torch._fused_adam_`` is private API, used here because it is what torch's
own fused Adam calls; its CPU kernel exists from torch 2.4, the floor in
pyproject.toml. If torch changes its signature, tests/test_optim.py fails
(it compares every step with ``torch.optim.Adam(fused=True)``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class FusedAdam:
    """Adam (Kingma & Ba 2015) with L2 weight decay added to the gradient, as torch's Adam."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.params = list(params)
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.exp_avg = [
            torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params
        ]
        self.exp_avg_sq = [
            torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params
        ]
        # Every parameter is stepped together, so one step count serves all: the
        # kernel gets the same tensor once per parameter and it is bumped once
        # (on the CPU ``_foreach_add_`` would be a separate op per parameter).
        device = self.params[0].device if self.params else torch.device("cpu")
        self._step = torch.zeros((), dtype=torch.float32, device=device)
        self.steps = [self._step] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            raise RuntimeError("FusedAdam.step: every parameter needs a gradient")
        self._step.add_(1)
        torch._fused_adam_(
            self.params,
            grads,
            self.exp_avg,
            self.exp_avg_sq,
            [],
            self.steps,
            amsgrad=False,
            lr=self.lr,
            beta1=self.betas[0],
            beta2=self.betas[1],
            weight_decay=self.weight_decay,
            eps=self.eps,
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )

    @property
    def step_count(self) -> int:
        return int(self._step)

    def load(self, step: int, exp_avg: list[torch.Tensor], exp_avg_sq: list[torch.Tensor]) -> None:
        """Restore saved state (tensors in parameter order)."""
        for target, value in zip(self.exp_avg, exp_avg, strict=True):
            target.copy_(value)
        for target, value in zip(self.exp_avg_sq, exp_avg_sq, strict=True):
            target.copy_(value)
        self._step.fill_(float(step))
