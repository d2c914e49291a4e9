"""bf16 against fp32: the same model and seed, held-out error and training time.

Run: ``python benchmarks/precision.py [--epochs 30] [--compile]`` (``--compile``: the
bf16 column trains with --compile, fp32 stays eager). Two datasets with real
structure: the shipped digits (64 pixels) and the same digits enlarged to 28 x 28
(784 pixels, nearest-neighbour), 20% held out. The issue's bound: bf16's held-out
loss within 3% of fp32's. Speed ratios are in benchmarks/train_speed.py.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from aecli import api, datasets
from aecli.config import TrainConfig, resolve_config
from aecli.io import Table


def enlarge(values: np.ndarray) -> np.ndarray:
    """8 x 8 digits to 28 x 28: each pixel becomes a 3 x 3 block, padded by 2 on each side."""
    images = values.reshape(-1, 8, 8).repeat(3, axis=1).repeat(3, axis=2)
    return np.pad(images, ((0, 0), (2, 2), (2, 2))).reshape(len(values), -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--compile", action="store_true", help="bf16 with --compile")
    args = parser.parse_args()
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise SystemExit("this CPU has no native bf16")
    digits = datasets.load("digits").values
    print(f"{'data':<16}{'kind':<7}{'seed':>5}{'fp32 mse':>10}{'bf16 mse':>10}{'ratio':>7}"
          f"{'fp32 s':>8}{'bf16 s':>8}")  # fmt: skip
    for name, values in (("digits 64", digits), ("digits 28x28", enlarge(digits))):
        order = np.random.default_rng(0).permutation(len(values))
        test, train = values[order[:359]], values[order[359:]]
        for kind in ("basic", "vae"):
            for seed in (int(s) for s in args.seeds.split(",")):
                row = {}
                for precision in ("fp32", "bf16"):
                    config = resolve_config(
                        kind, values.shape[1], hidden=None, latent=16, loss="auto", noise="auto"
                    )
                    train_config = TrainConfig(
                        epochs=args.epochs,
                        seed=seed,
                        precision=precision,
                        device="cpu",
                        compile=args.compile and precision == "bf16",
                    )
                    start = time.perf_counter()
                    fitted, _ = api.train(
                        Table(train, None, (values.shape[1],)), config, train_config
                    )
                    seconds = time.perf_counter() - start
                    mse = float(np.mean((fitted.reconstruct(test) - test) ** 2))
                    row[precision] = (mse, seconds)
                (a, ta), (b, tb) = row["fp32"], row["bf16"]
                print(f"{name:<16}{kind:<7}{seed:>5}{a:>10.4f}{b:>10.4f}{b / a:>7.3f}"
                      f"{ta:>8.1f}{tb:>8.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
