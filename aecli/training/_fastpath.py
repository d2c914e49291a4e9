"""A hand-written training step for plain MLP autoencoders: no autograd engine.

On small tables a training step is a few dozen tiny kernels, and the
autograd engine's bookkeeping between them costs about a third of the step.
For the architectures whose gradients are short to write down (untied
stacks of Linear layers with an elementwise activation, mse or bce loss:
the basic/denoising autoencoder and the VAE with its reparameterised
Gaussian latent and closed-form KL) this module runs the forward pass,
computes the gradients layer by layer and hands them to the optimizer:
1.6-1.9x faster fp32 steps on small tables (2 Intel Xeon cores). bf16 runs the
same step with the big products in bfloat16 (float32 master weights, loss and
Adam), 1.04-1.22x autocast's speed with autograd. Under --compile the same step
is compiled. Everything else (tied weights, sparse, conv) uses autograd; tests
compare the two on every activation, loss, noise and depth (tests/test_fastpath.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from aecli.config import Loss
from aecli.models import Autoencoder, VariationalAutoencoder

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805
# Compiled code draws noise with torch's own generator, as eager code does: --compile then
# changes the speed, not the draws, so a compiled model is the eager one up to rounding.
COMPILE_OPTIONS = {"fallback_random": True}
# Values in a batch's layer from which _elu beats F.elu: at 16,384 it takes 20 against 32 us
# on 1 thread, 31 against 34 on 2 (whose elementwise kernels split only from 32,768); at
# 8,192 they tie on 1 thread and F.elu wins on 2 (20 against 34 us).
ELU_BY_EXP = 16_384
# Multiply-adds in a product (rows x inputs x outputs) from which bf16 beats fp32 on a CPU.
# A bf16 product costs about 40 us more a call than fp32 (oneDNN's set-up; 2 cores, AMX),
# and the casts around it more: a 256 -> 128 layer at 256 rows (8.4M) trains 8% slower in
# bf16, 784 -> 256 at 64 rows (12.8M) 4-12%, 512 -> 256 at 256 rows (33.5M) faster.
BF16_FROM = 1 << 24

Step = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def bf16_product(rows: int, inputs: int, outputs: int) -> bool:
    """Whether a product of this many multiply-adds runs faster in bf16 than fp32 on a CPU."""
    return rows * inputs * outputs >= BF16_FROM


def bf16_pays(model: torch.nn.Module, rows: int) -> bool:
    """Whether bf16 autocast pays on a CPU for a model trained through autograd.

    Autocast is all or nothing (the hand-written step picks per layer): it is worth it
    when one Linear layer reaches BF16_FROM at ``rows`` rows a batch, or the model has
    convolutions (left to bf16 as asked). A default-sized sparse model at batch 64
    trained at 0.47-0.52x its fp32 speed in bf16; with this it trains in fp32.
    """
    modules = list(model.modules())
    if any(isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in modules):
        return True
    linear = [m for m in modules if isinstance(m, torch.nn.Linear)]
    return any(bf16_product(rows, *m.weight.shape) for m in linear)


def _elu(pre: torch.Tensor) -> torch.Tensor:
    """ELU (alpha 1) as max(x, exp(min(x, 0)) - 1): the same function, 2x faster here.

    torch's CPU ELU kernel evaluates expm1, about 5x the cost of exp: on a 256 x 512
    batch (2 cores) F.elu takes 174 us and this 83. Below zero exp(x) - 1 >= x, above
    it exp(0) - 1 = 0 < x, so the maximum picks the right branch. Results differ from
    F.elu by at most 6e-8 (the rounding of exp(x) - 1 near 0), far inside training
    noise; the module's own forward (inference, autograd kinds) keeps F.elu.
    """
    if pre.numel() < ELU_BY_EXP:  # three kernel calls cost more than expm1 on small batches
        return F.elu(pre)
    out = pre.clamp(max=0.0).exp_().sub_(1.0)  # one new tensor, as F.elu
    return torch.maximum(out, pre, out=out)


def _as(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor.to(dtype)``, without the call where it is one already.

    A no-op ``.to`` still costs about a microsecond of dispatch, and fp32 steps on
    small tables would pay some 20 of them a step (1.5-5% of a 32-64-8 step).
    """
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def _bias_grad(grad: torch.Tensor) -> torch.Tensor:
    """The bias gradient, the column sums of ``grad``, in float32 for Adam.

    The sum accumulates in float32 whatever the input; rounded to bfloat16 once at
    the end it has the weight gradient's precision (the product rounds it too). Asking
    for a float32 result instead runs a 3x slower kernel on bfloat16 (61 against 18 us
    for 256 x 512, 2 cores).
    """
    return _as(grad.sum(0), torch.float32)


def _activation(
    name: str, act: Callable[[torch.Tensor], torch.Tensor], one_kernel: bool
) -> tuple[
    Callable[[torch.Tensor], torch.Tensor],
    Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
]:
    """The activation and d(act)/d(pre) applied to ``grad``, given pre-activation and output.

    ``one_kernel``: the module's own activation, where F.elu is one pass: compiled
    (inductor fuses its expm1 with its neighbours) or on a GPU, whose ELU kernel is one
    pass where ``_elu`` would launch four (not measured on a GPU yet: the CPU's slow
    expm1, the reason for ``_elu``, is not the GPU's). ``_elu`` is for eager CPU steps.
    """
    if name == "elu":  # from the output: grad * (out + 1) below zero, no exp (2.5x faster)
        return (
            act if one_kernel else _elu,
            lambda grad, pre, out: torch.ops.aten.elu_backward.default(
                grad, 1.0, 1, 1.0, True, out
            ),
        )
    if name == "selu":
        return act, lambda grad, pre, out: torch.ops.aten.elu_backward.default(
            grad, SELU_ALPHA, SELU_SCALE, 1.0, False, pre
        )
    if name == "relu":
        return act, lambda grad, pre, out: torch.ops.aten.threshold_backward.default(grad, out, 0)
    if name == "tanh":
        return act, lambda grad, pre, out: torch.ops.aten.tanh_backward.default(grad, out)
    raise KeyError(name)


def manual_step(
    model: Autoencoder, precision: str, forward: object, compiled: bool = False
) -> Step | None:
    """A step function that sets every parameter's ``.grad``, or None where autograd is needed.

    bf16: products in bfloat16, loss and gradients handed to Adam in float32, as
    autocast does, with less around them (one weight cast a step, no autograd graph).
    tf32 is the fp32 step: the products' TF32 mode is torch's switch, set around
    training (``aecli.training._device.matmul_precision``).
    ``compiled`` (--compile): the step goes through torch.compile, which fuses the
    elementwise work between the matrix products (activations, their gradients, the
    casts, the loss) into a few kernels.
    """
    if type(model) not in (Autoencoder, VariationalAutoencoder):
        return None
    config = model.config
    if (
        config.tied
        or precision not in ("fp32", "bf16", "tf32")  # tf32: fp32 here, its products set apart
        or forward is not model
        or config.activation not in ("elu", "selu", "relu", "tanh")
    ):
        return None
    hand = _HandStep(model, precision == "bf16", compiled)
    step = hand.step_vae if hand.vae else hand.step_ae
    return torch.compile(step, options=COMPILE_OPTIONS) if compiled else step


class _Layer:
    """A Linear layer's parameters as plain attributes, and its weight's transpose, kept.

    A step reads each layer's weight and bias several times; through ``nn.Module``'s
    ``__getattr__`` and a fresh ``.t()`` view each read costs microseconds, some 10%
    of a small table's step. The parameters are updated in place (Adam, a restored
    snapshot, the weights' average), so the view made once stays theirs.
    """

    def __init__(self, module: torch.nn.Linear) -> None:
        self.weight: torch.nn.Parameter = module.weight
        self.bias: torch.nn.Parameter = module.bias
        self.weight_t = module.weight.detach().t()  # no autograd: steps run without it

    def cast(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight in ``dtype`` and its transpose (the kept view where no cast is needed)."""
        if dtype == self.weight.dtype:
            return self.weight, self.weight_t
        weight = self.weight.to(dtype)
        return weight, weight.t()


class _HandStep:
    """The forward and backward of a plain MLP autoencoder or VAE, written out.

    Each method is one piece of the step; ``step_ae`` and ``step_vae`` put them together.
    """

    def __init__(self, model: Autoencoder, bf16: bool, compiled: bool) -> None:
        config = model.config
        self.model, self.config, self.bf16, self.compiled = model, config, bf16, compiled
        self.on_cpu = next(model.parameters()).device.type == "cpu"
        self.hidden = [_Layer(m) for m in list(model.encoder)[:-1]]
        self.coding = _Layer(model.encoder[-1])
        self.decoder = [_Layer(m) for m in model.decoder]
        self.act, self.act_backward = _activation(
            config.activation, model.act, compiled or not self.on_cpu
        )
        self.bce = config.loss is Loss.bce
        self.vae = isinstance(model, VariationalAutoencoder)
        self.head = _Layer(model.gamma) if self.vae else None

    def low(self, rows: int, layer: _Layer) -> torch.dtype:
        """The dtype of a layer's products: bf16 where asked, but on a CPU only if they are big."""
        if not self.bf16 or (self.on_cpu and not bf16_product(rows, *layer.weight.shape)):
            return torch.float32
        return torch.bfloat16

    def mlp_forward(self, layers: list[_Layer], h: torch.Tensor, last_activated: bool) -> Any:
        """Linear layers with the activation after each (after the last one if asked)."""
        saved = []
        for i, layer in enumerate(layers):
            on = last_activated or i < len(layers) - 1
            dtype = self.low(h.shape[0], layer)
            h = _as(h, dtype)
            weight, weight_t = layer.cast(dtype)
            pre = torch.addmm(_as(layer.bias, dtype), h, weight_t)
            out = self.act(pre) if on else pre
            saved.append((h, pre, out, on, weight))
            h = out
        return h, saved

    def mlp_backward(
        self, layers: list[_Layer], saved: list, grad: torch.Tensor, need_input: bool
    ) -> torch.Tensor | None:
        """Write the layers' gradients; return the gradient at their input if needed."""
        for i in range(len(layers) - 1, -1, -1):
            layer = layers[i]
            inp, pre, out, on, weight = saved[i]
            grad = _as(grad, inp.dtype)  # the layer's dtype, as its neighbour's may differ
            if on:
                grad = self.act_backward(grad, pre, out)
            layer.weight.grad = _as(grad.t().mm(inp), torch.float32)
            layer.bias.grad = _bias_grad(grad)
            if i or need_input:
                grad = grad.mm(weight)
        return grad if need_input else None

    def reconstruction(
        self, decoded: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss the model's forward uses, and its gradient w.r.t. the decoder output.

        Autoencoder: the mean per value. VAE: the sum over features, mean over rows
        (half the squared error for mse). In float32 whatever the precision.
        """
        decoded = _as(decoded, torch.float32)
        rows = max(x.shape[0], 1)  # a process's share of a batch may have no rows
        values = max(decoded.numel(), 1)
        if self.bce:
            loss = F.binary_cross_entropy_with_logits(decoded, x)
            grad = torch.sigmoid(decoded) - x
            if self.vae:
                return loss * x.shape[1], grad / rows
            return loss, grad / values
        diff = decoded - x
        flat = diff.view(-1)
        # Eager: one pass, no temporary (square().sum() takes two). Compiled: a dot is an
        # external call that inductor cannot fuse with the gradient's scaling.
        squares = diff.square().sum() if self.compiled else torch.dot(flat, flat)
        if self.vae:
            return 0.5 * squares / rows, diff.div_(rows)
        return squares / values, diff.mul_(2.0 / values)

    @torch.no_grad()
    def step_ae(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        encoder = [*self.hidden, self.coding]
        h, enc = self.mlp_forward(encoder, self.model.corrupt(batch), False)
        decoded, dec = self.mlp_forward(self.decoder, h, False)
        loss, grad = self.reconstruction(decoded, batch)
        grad = self.mlp_backward(self.decoder, dec, grad, True)
        self.mlp_backward(encoder, enc, grad, False)
        return loss, {"reconstruction": loss}

    @torch.no_grad()
    def step_vae(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model, coding, hidden = self.model, self.coding, self.hidden
        h, enc = self.mlp_forward(hidden, model.corrupt(batch), True)
        head = self.head
        code = self.low(h.shape[0], coding)  # the mean's and the log-variance's heads alike
        h = _as(h, code)
        (code_weight, code_t), (head_weight, head_t) = coding.cast(code), head.cast(code)
        mu = _as(torch.addmm(_as(coding.bias, code), h, code_t), torch.float32)
        gamma = _as(torch.addmm(_as(head.bias, code), h, head_t), torch.float32)
        sigma = torch.exp(0.5 * gamma)
        eps = model.normal_like(mu)  # drawn after the input noise, as the module's forward
        decoded, dec = self.mlp_forward(self.decoder, mu + sigma * eps, False)
        rec, grad = self.reconstruction(decoded, batch)
        rows = max(batch.shape[0], 1)
        beta = self.config.beta * model.kl_weight  # --beta-warmup
        variance = torch.exp(gamma)
        latent = 0.5 * (variance + mu.square() - 1.0 - gamma).sum() / rows
        grad_z = _as(self.mlp_backward(self.decoder, dec, grad, True), torch.float32)  # type: ignore[arg-type]
        grad_mu = _as(grad_z + mu * (beta / rows), code)
        grad_gamma = _as(grad_z * eps * sigma * 0.5 + (variance - 1.0) * (0.5 * beta / rows), code)
        coding.weight.grad = _as(grad_mu.t().mm(h), torch.float32)
        coding.bias.grad = _bias_grad(grad_mu)
        head.weight.grad = _as(grad_gamma.t().mm(h), torch.float32)
        head.bias.grad = _bias_grad(grad_gamma)
        if hidden:
            grad_h = grad_mu.mm(code_weight) + grad_gamma.mm(head_weight)
            self.mlp_backward(hidden, enc, grad_h, False)
        loss = rec + beta * latent
        return loss, {"reconstruction": rec, "latent": latent}
