"""Training throughput: aecli's trainer vs a tutorial PyTorch loop vs the matmul ceiling.

Run: ``python benchmarks/train_speed.py [--quick] [--workloads tabular,pixels]
[--kinds basic,vae] [--precisions fp32,bf16] [--compile] [--device cuda]
[--openmp runtime]``.
Synthetic data of the two shapes that matter (a tabular 32-column table, 784-pixel
images), AE and VAE; one warm-up epoch, then the best of ``--repeats`` timed epochs,
taken in rounds that time every column once (so a VM's drift hits all columns
alike). Prints samples/s and ratios measured in the same run. The tutorial loop is
fp32 (what tutorials write); the ceiling is the step's forward and backward matrix
products alone, in the same precision as the aecli column it is compared with, and
``+adam`` the same products with the optimizer's step after each (what no step can
go below: everything else, activations, loss, casts, batches, is the rest).
Every column runs with the OpenMP wait ``aecli train`` sets (short spins, see
aecli/openmp.py); ``--openmp runtime`` runs them with the runtime's own, as a
plain PyTorch script would (on a quiet 2-core VM bf16 averaged 1.19x faster so,
fp32 1.05x).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable
from itertools import pairwise

import torch
from torch.utils.data import DataLoader, TensorDataset

from aecli.config import ModelConfig, TrainConfig
from aecli.io import Table
from aecli.models import build_model
from aecli.openmp import SHORT_WAIT, wait_briefly
from aecli.training import (
    WARMUP_STEPS,
    EpochStats,
    ModelRequest,
    bf16_product,
    choose_threads,
    keep_freed_memory,
    make_optimizer,
    matmul_precision,
    on_side_stream,
    prepare,
)

CPU = torch.device("cpu")
WORKLOADS = {
    "tabular": ("32-64-8", 200_000, dict(n_inputs=32, hidden=(64,), latent=8)),
    "pixels": ("784-512-256-32", 60_000, dict(n_inputs=784, hidden=(512, 256), latent=32)),
}


def best_of_interleaved(
    repeats: int, runs: dict[str, Callable[[], float | None]], device: torch.device
) -> dict[str, float]:
    """The best time of each run, taken in rounds that run each once.

    A 2-core VM's speed drifts from one minute to the next; rounds keep every
    column's best from the same stretch of time, so the ratios hold even when
    the absolute figures move. A run that times itself returns its seconds.
    """

    def sync() -> None:  # a GPU runs ahead of Python: time what it did, not what was queued
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for run in runs.values():
        run()  # warm-up
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            sync()
            start = time.perf_counter()
            timed = run()
            sync()
            seconds = time.perf_counter() - start if timed is None else timed
            best[name] = min(best[name], seconds)
    return best


def tutorial_epoch(
    config: ModelConfig, data: torch.Tensor, batch: int, device: torch.device
) -> Callable[[], None]:
    """The loop most tutorials write: DataLoader over a TensorDataset, default Adam.

    The rows stay in host memory and each batch is moved to the device, as tutorials do.
    """
    torch.manual_seed(0)
    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(data), batch_size=batch, shuffle=True)

    def run() -> None:
        for (x,) in loader:
            loss, _ = model(x.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return run


def tf32(run: Callable[[], None], on: bool) -> Callable[[], None]:
    """``run`` with float32 products on a GPU's TF32 units when ``on``, as ``--precision tf32``."""
    if not on:
        return run

    def wrapped() -> None:
        with matmul_precision("tf32"):
            run()

    return wrapped


class _Timed(Exception):
    """Raised by the epoch callback once the timed epoch is done: the run's statistics
    (PCA, score percentiles) are not what this benchmark measures."""


def aecli_epoch(
    config: ModelConfig,
    data: torch.Tensor,
    batch: int,
    precision: str,
    compiled: bool = False,
    device: torch.device = CPU,
) -> Callable[[], float]:
    """An epoch as aecli train runs it: ``prepare(...).execute()``, the rows in memory.

    Each call trains two epochs of a fresh model (on CUDA full batches replay a CUDA
    graph; ``compiled``: as --compile) and returns the second one's seconds, as the run
    timed it: the first pays the warm-up (graph capture, compilation).
    """
    table = Table(data.numpy(), None, (config.n_inputs,))
    request = ModelRequest(
        kind=config.kind, hidden=config.hidden, latent=config.latent, loss=config.loss
    )
    train = TrainConfig(
        epochs=2, batch_size=batch, precision=precision, compile=compiled, val_fraction=0,
        scale="none", device=str(device),
    )  # fmt: skip

    def run() -> float:
        seconds: list[float] = []

        def on_epoch(stats: EpochStats) -> None:
            seconds.append(stats.seconds)
            if stats.epoch == stats.epochs:
                raise _Timed

        with contextlib.suppress(_Timed):
            prepare(table, request, train).execute(on_epoch)
        return seconds[-1]

    return run


def matmul_ceiling(
    config: ModelConfig,
    rows: int,
    batch: int,
    precision: str,
    device: torch.device = CPU,
    with_adam: bool = False,
) -> Callable[[], None]:
    """Only the matrix products of forward and backward, nothing else.

    In the dtype the hand-written step gives each layer: in bf16 on a CPU, layers too
    small for bf16 to pay (``BF16_FROM``) stay fp32 in both.

    Three per layer, less one: no training step computes the gradient with respect
    to the data itself (the first layer's input), neither autograd nor aecli's.
    ``with_adam``: each step also runs the optimizer (fp32 Adam over the model's
    parameters, as training does): the floor of a step that has to update weights.
    Adam moves every parameter, gradient and both moments each step, memory-bound
    work that the products evict from the caches in between.
    """
    sizes = [*config.sizes, *reversed(config.sizes[:-1])]
    shapes = list(pairwise(sizes))

    def dtype(a: int, b: int) -> torch.dtype:  # as the hand-written step picks
        small = device.type == "cpu" and not bf16_product(batch, a, b)
        return torch.bfloat16 if precision == "bf16" and not small else torch.float32

    acts = [torch.randn(batch, a, dtype=dtype(a, b), device=device) for a, b in shapes]
    weights = [torch.randn(b, a, dtype=dtype(a, b), device=device) for a, b in shapes]
    grads = [torch.randn(batch, b, dtype=dtype(a, b), device=device) for a, b in shapes]
    steps = rows // batch
    optimizer = None
    if with_adam:
        torch.manual_seed(0)
        model = build_model(config).to(device)
        for param in model.parameters():
            param.grad = torch.randn_like(param) * 1e-3
        optimizer = make_optimizer(model, TrainConfig(batch_size=batch))

    def step() -> None:
        for i, (x, w, g) in enumerate(zip(acts, weights, grads)):
            x @ w.t()
            g.t() @ x
            if i:
                g @ w
        if optimizer is not None:
            optimizer.step()

    def run() -> None:
        for _ in range(steps):
            step()

    if device.type == "cuda":  # launched from one graph, as aecli's step: the GPU's own time
        return tf32(graph_of(step, steps, device), precision == "tf32")
    return run


def graph_of(step: Callable[[], None], times: int, device: torch.device) -> Callable[[], None]:
    """``step`` captured once in a CUDA graph (after eager warm-ups), replayed ``times`` times."""
    graph: list[torch.cuda.CUDAGraph] = []

    def run() -> None:
        if not graph:
            for _ in range(WARMUP_STEPS):
                on_side_stream(step, device)
            graph.append(torch.cuda.CUDAGraph())
            with torch.cuda.graph(graph[0]):
                step()
        for _ in range(times):
            graph[0].replay()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="128,256,1024")
    parser.add_argument("--workloads", default="tabular,pixels")
    parser.add_argument("--kinds", default="basic,vae")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the rows")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument(
        "--compile", action="store_true", help="also rows with --compile (fp32c, bf16c)"
    )
    parser.add_argument(
        "--tf32", action="store_true", help="CUDA: also the fp32 step with TF32 products (tf32)"
    )
    parser.add_argument(
        "--openmp",
        choices=["aecli", "runtime"],
        default="aecli",
        help="OpenMP's idle wait: aecli (short spins, as aecli train sets) or runtime (its own)",
    )
    args = parser.parse_args()
    as_openmp(args.openmp)
    kept = keep_freed_memory()  # as aecli train does
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: this torch has no CUDA device")
    precisions = args.precisions.split(",")
    cuda = device.type == "cuda"
    if args.tf32 and cuda:
        precisions.append("tf32")
    native = (
        torch.cuda.is_bf16_supported()
        if device.type == "cuda"
        else torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
    if "bf16" in precisions and not native:
        precisions.remove("bf16")
        print(f"(no native bf16 on {device}: bf16 rows skipped)")
    where = (
        f"{torch.cuda.get_device_name(device)}"
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} cores; threads as aecli picks"
    )
    print(
        f"torch {torch.__version__}, {where}; freed memory {'kept' if kept else 'returned'}"
        f" (as aecli train); OpenMP waits: {waits()} (every column)"
    )
    header = f"{'workload':<26}{'batch':>6}{'thr':>4}{'prec':>5}{'tutorial/s':>11}{'aecli/s':>9}"
    print(
        header + f"{'ceiling/s':>10}{'+adam/s':>9}{'vs tut':>7}{'vs ceil':>8}{'vs +adam':>9}"
        f"{'vs fp32':>8}"
    )
    for workload in args.workloads.split(","):
        shape, rows, sizes = WORKLOADS[workload]
        rows = rows // 10 if args.quick else rows
        for kind in args.kinds.split(","):
            config = ModelConfig(kind=kind, loss="mse", **sizes)  # type: ignore[arg-type]
            name = f"{workload} {kind} {shape}"
            data = torch.rand(rows, config.n_inputs)
            n_params = sum(p.numel() for p in build_model(config).parameters())
            for batch in (int(b) for b in args.batches.split(",")):
                threads = choose_threads(0, n_params * batch)
                torch.set_num_threads(threads)
                runs = {"tutorial": tutorial_epoch(config, data, batch, device)}
                # (precision, compiled)
                modes = [(p, False) for p in precisions]
                modes += [(p, True) for p in precisions] if args.compile else []
                for precision, compiled in modes:
                    runs[label(precision, compiled)] = aecli_epoch(
                        config, data, batch, precision, compiled, device
                    )
                for precision in precisions:
                    for adam in (False, True):
                        ceiling = matmul_ceiling(config, rows, batch, precision, device, adam)
                        runs[f"ceiling {precision}{' adam' if adam else ''}"] = ceiling
                best = best_of_interleaved(args.repeats, runs, device)
                speed = {k: rows / v for k, v in best.items()}
                tutorial = speed["tutorial"]
                for precision, compiled in modes:  # vs fp32: fp32 of the same mode
                    row = label(precision, compiled)
                    ours, ceiling = speed[row], speed[f"ceiling {precision}"]
                    adam = speed[f"ceiling {precision} adam"]
                    fp32 = speed.get(label("fp32", compiled))
                    vs_fp32 = f"{ours / fp32:>8.2f}" if fp32 and precision != "fp32" else " " * 8
                    print(
                        f"{name:<26}{batch:>6}{threads:>4}{row:>5}{tutorial:>11.0f}"
                        f"{ours:>9.0f}{ceiling:>10.0f}{adam:>9.0f}{ours / tutorial:>7.2f}"
                        f"{ours / ceiling:>8.2f}{ours / adam:>9.2f}{vs_fp32}",
                        flush=True,
                    )


def as_openmp(mode: str) -> None:
    """Run this script again with the OpenMP wait asked for, if torch loaded another.

    The runtime reads it once, when torch loads it (at this script's import), so a
    different one takes a new process. ``aecli``: as ``aecli train`` sets it
    (aecli/openmp.py); ``runtime``: the runtime's own, as a plain PyTorch script.
    """
    env = dict(os.environ)
    if mode == "aecli":
        wait_briefly(env, loaded=False)  # for a new process, which has not loaded torch
    else:
        for name in SHORT_WAIT:
            env.pop(name, None)
    if env != dict(os.environ):
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def waits() -> str:
    """The OpenMP wait this process runs with, in words."""
    if "OMP_WAIT_POLICY" in os.environ:
        return f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    named = [f"{name}={os.environ[name]}" for name in SHORT_WAIT if name in os.environ]
    return ", ".join(named) if named else "the runtime's own"


def label(precision: str, compiled: bool) -> str:
    """A row's name: fp32, bf16 or tf32, then c for --compile."""
    return precision + ("c" if compiled else "")


if __name__ == "__main__":
    main()
