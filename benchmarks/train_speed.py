"""Training throughput: aecli's trainer vs a tutorial PyTorch loop vs the matmul ceiling.

Run: ``python benchmarks/train_speed.py [--quick]``. Synthetic data of the two
shapes that matter (a tabular 32-column table, 784-pixel images); one warm-up
epoch, then the best of ``--repeats`` timed epochs. Prints samples/s and
ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from itertools import pairwise

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aecli.config import ModelConfig, TrainConfig
from aecli.device import choose_threads
from aecli.models import build_model
from aecli.train import _train_epoch, make_optimizer

WORKLOADS = {
    "tabular 32-64-8": (200_000, ModelConfig(n_inputs=32, hidden=(64,), latent=8)),
    "pixels 784-512-256-32": (60_000, ModelConfig(n_inputs=784, hidden=(512, 256), latent=32)),
}


def best_of(repeats: int, run: Callable[[], None]) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def tutorial_epoch(config: ModelConfig, data: torch.Tensor, batch: int) -> Callable[[], None]:
    """The loop most tutorials write: DataLoader over a TensorDataset, default Adam."""
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(data), batch_size=batch, shuffle=True)

    def run() -> None:
        for (x,) in loader:
            loss, _ = model(x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return run


def aecli_epoch(config: ModelConfig, data: torch.Tensor, batch: int) -> Callable[[], None]:
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = make_optimizer(model, TrainConfig(batch_size=batch))
    return lambda: _train_epoch(model, optimizer, data, batch)


def matmul_ceiling(config: ModelConfig, rows: int, batch: int) -> Callable[[], None]:
    """Only the matrix products of forward and backward (3 per layer), nothing else."""
    sizes = [*config.sizes, *reversed(config.sizes[:-1])]
    shapes = list(pairwise(sizes))
    acts = [torch.randn(batch, a) for a, _ in shapes]
    weights = [torch.randn(b, a) for a, b in shapes]
    grads = [torch.randn(batch, b) for _, b in shapes]
    steps = rows // batch

    def run() -> None:
        for _ in range(steps):
            for x, w, g in zip(acts, weights, grads):
                x @ w.t()
                g.t() @ x
                g @ w

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="128,256,1024")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a tenth of the rows")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, fp32, CPU, threads chosen per workload")
    header = f"{'workload':<24}{'batch':>6}{'thr':>4}{'tutorial/s':>12}{'aecli/s':>10}"
    print(header + f"{'ceiling/s':>11}{'aecli/tut':>10}{'aecli/ceil':>11}")
    for name, (rows, config) in WORKLOADS.items():
        rows = rows // 10 if args.quick else rows
        data = torch.rand(rows, config.n_inputs)
        n_params = sum(p.numel() for p in nn.ModuleList([build_model(config)]).parameters())
        for batch in (int(b) for b in args.batches.split(",")):
            threads = choose_threads(0, n_params * batch)
            torch.set_num_threads(threads)
            rates = [
                rows / best_of(args.repeats, make(config, data, batch))
                for make in (tutorial_epoch, aecli_epoch)
            ]
            ceiling = rows / best_of(args.repeats, matmul_ceiling(config, rows, batch))
            tut, ours = rates
            print(
                f"{name:<24}{batch:>6}{threads:>4}{tut:>12.0f}{ours:>10.0f}{ceiling:>11.0f}"
                f"{ours / tut:>10.2f}{ours / ceiling:>11.2f}"
            )


if __name__ == "__main__":
    main()
