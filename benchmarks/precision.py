"""bf16 against fp32: the same model and seed, held-out error and training time.

Run: ``python benchmarks/precision.py [--epochs 30] [--compile] [--device cuda]
[--against tf32]`` (``--compile``: the bf16 column trains with --compile, fp32 stays
eager; ``--against tf32``, CUDA only: the second column is fp32 training whose
products run on TF32 units, a 10-bit mantissa: ``--precision tf32``). Two datasets with real
structure: the shipped digits (64 pixels) and the same digits enlarged to 28 x 28
(784 pixels, nearest-neighbour), 20% held out; default sizes and batch, then the wide
784-512-256 model at batch 256. On a CPU, products too small for bf16 to pay stay fp32
(aecli/training/_fastpath.py, BF16_FROM): ``bf16 share`` is the part of the multiply-adds run in
bf16, so a row at 0 compares fp32 with itself. The issue's bound: bf16's held-out
loss within 1% of fp32's. Speed ratios are in benchmarks/train_speed.py.
"""

from __future__ import annotations

import argparse
import time
from itertools import pairwise

import numpy as np
import torch

from aecli import datasets
from aecli.config import TrainConfig, resolve_config
from aecli.io import Table
from aecli.training import ModelRequest, bf16_product, prepare


def enlarge(values: np.ndarray) -> np.ndarray:
    """8 x 8 digits to 28 x 28: each pixel becomes a 3 x 3 block, padded by 2 on each side."""
    images = values.reshape(-1, 8, 8).repeat(3, axis=1).repeat(3, axis=2)
    return np.pad(images, ((0, 0), (2, 2), (2, 2))).reshape(len(values), -1)


def bf16_share(sizes: tuple[int, ...], batch: int) -> float:
    """The part of a step's multiply-adds the hand-written bf16 step runs in bf16."""
    layers = [*pairwise(sizes), *pairwise(reversed(sizes))]
    bf16 = sum(batch * a * b for a, b in layers if bf16_product(batch, a, b))
    return bf16 / sum(batch * a * b for a, b in layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--compile", action="store_true", help="bf16 with --compile")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--against", default="bf16", choices=["bf16", "tf32"])
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    if args.against == "tf32" and not cuda:
        raise SystemExit("--against tf32 needs --device cuda")
    if not cuda and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise SystemExit("this CPU has no native bf16")
    low = args.against
    digits = datasets.load("digits").values
    print(f"{'data':<22}{'kind':<7}{'seed':>5}{'bf16 share':>11}{'fp32 mse':>10}{low + ' mse':>10}"
          f"{'ratio':>7}{'fp32 s':>8}{low + ' s':>8}")  # fmt: skip
    pixels = enlarge(digits)
    cases = (  # name, rows, hidden layers (None: aecli's default), batch
        ("digits 64", digits, None, 64),
        ("digits 28x28", pixels, None, 64),
        ("28x28 512,256 b256", pixels, (512, 256), 256),
    )
    for name, values, hidden, batch in cases:
        order = np.random.default_rng(0).permutation(len(values))
        test, train = values[order[:359]], values[order[359:]]
        for kind in ("basic", "vae"):
            for seed in (int(s) for s in args.seeds.split(",")):
                row = {}
                config = resolve_config(
                    kind, values.shape[1], hidden=hidden, latent=16, loss="auto", noise="auto"
                )
                share = bf16_share(config.sizes, batch) if not cuda else float(low == "bf16")
                for precision in ("fp32", low):
                    train_config = TrainConfig(
                        epochs=args.epochs,
                        batch_size=batch,
                        seed=seed,
                        precision=precision,
                        device=args.device,
                        compile=args.compile and precision == "bf16",
                    )
                    start = time.perf_counter()
                    request = ModelRequest(kind=kind, hidden=hidden, latent=16)
                    table = Table(train, None, (values.shape[1],))
                    fitted = prepare(table, request, train_config).execute().fitted
                    seconds = time.perf_counter() - start
                    mse = float(np.mean((fitted.reconstruct(test) - test) ** 2))
                    row[precision] = (mse, seconds)
                (a, ta), (b, tb) = row["fp32"], row[low]
                print(f"{name:<22}{kind:<7}{seed:>5}{share:>11.2f}{a:>10.4f}{b:>10.4f}"
                      f"{b / a:>7.3f}{ta:>8.1f}{tb:>8.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
