"""Reconstruction quality on held-out digits: a basic autoencoder vs PCA at the same code size.

Run: ``python benchmarks/quality.py [--epochs N] [--seeds 0,1]``. Prints a table of
held-out mean squared error per pixel (original 0..16 units) and the ratio AE / PCA.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from aecli import api, datasets
from aecli.config import ModelConfig, TrainConfig, resolve_config
from aecli.io import Table
from aecli.pca import PCA


def split(values: np.ndarray, seed: int, test_fraction: float = 0.2) -> tuple[np.ndarray, ...]:
    order = np.random.default_rng(seed).permutation(len(values))
    n_test = int(len(values) * test_fraction)
    return values[order[n_test:]], values[order[:n_test]]


def autoencoder_mse(
    train: np.ndarray, test: np.ndarray, k: int, epochs: int, seed: int
) -> tuple[float, float]:
    config: ModelConfig = resolve_config(
        "basic", train.shape[1], hidden=None, latent=k, loss="mse", noise="none"
    )
    train_config = TrainConfig(epochs=epochs, val_fraction=0.0, seed=seed, device="cpu")
    start = time.perf_counter()
    fitted, _ = api.train(Table(train, None, (train.shape[1],)), config, train_config)
    seconds = time.perf_counter() - start
    return float(np.mean((fitted.reconstruct(test) - test) ** 2)), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--codes", default="2,4,8,16")
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    values = datasets.load("digits").values
    print(f"digits: {values.shape[0]} rows x {values.shape[1]}, 20% held out, {args.epochs} epochs")
    print(f"{'k':>3} {'seed':>4} {'PCA mse':>9} {'AE mse':>9} {'AE/PCA':>7} {'train s':>8}")
    for seed in (int(s) for s in args.seeds.split(",")):
        train, test = split(values, seed)
        for k in (int(c) for c in args.codes.split(",")):
            pca = PCA.fit(train, k)
            pca_mse = float(np.mean((pca.reconstruct(test) - test) ** 2))
            ae_mse, seconds = autoencoder_mse(train, test, k, args.epochs, seed)
            ratio = ae_mse / pca_mse
            print(f"{k:>3} {seed:>4} {pca_mse:>9.4f} {ae_mse:>9.4f} {ratio:>7.3f} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
