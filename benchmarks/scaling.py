"""Training throughput with 1 and N processes under torchrun: what scaling out buys.

Run: ``python benchmarks/scaling.py [--procs 1,2] [--device cpu|cuda] [--epochs 4]
[--workloads tabular,pixels]``. Each row is a real ``aecli train`` (one
process) or ``torchrun --nproc-per-node N -m aecli train`` on synthetic data
of the two shapes that matter, at the same global batch; samples/s come from
the ``--log-file`` epoch times (rank 0's, which include waiting for the others),
first epoch left out (start-up and warm-up). Ratios are against 1 process
measured in the same run.

On a CPU the processes share the machine's cores (aecli gives each
cores / N threads), so the speed-up shows whether N processes use the same
cores better than one; on GPUs each process has its own device, and the
efficiency column is speed-up / N.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

WORKLOADS = {
    # name: (rows, inputs, flags)
    "tabular": (200_000, 32, ["--hidden", "64", "--latent", "8"]),
    "pixels": (30_000, 784, ["--hidden", "512,256", "--latent", "32"]),
}


def _torchrun() -> str:
    local = Path(sys.executable).parent / "torchrun"
    return str(local) if local.exists() else "torchrun"


def run(data: Path, procs: int, device: str, epochs: int, flags: list[str], batch: int) -> float:
    """Samples per second of one training run (median over epochs 2..)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log.jsonl"
        args = ["train", str(data), "-o", str(Path(tmp) / "m.safetensors"), "--log-file", str(log)]
        args += ["--epochs", str(epochs), "--batch-size", str(batch), "--device", device]
        # Streamed in both rows: under torchrun a .npy always is (each rank reads its rows).
        args += ["--val-fraction", "0", "--chunk-rows", "65536", "--quiet", *flags]
        if procs == 1:
            command = [sys.executable, "-m", "aecli", *args]
        else:
            command = [_torchrun(), "--nproc-per-node", str(procs), "-m", "aecli", *args]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        done = subprocess.run(command, capture_output=True, env=env)
        if done.returncode:
            raise SystemExit(done.stderr.decode()[-2000:])
        epochs_seen = [json.loads(line) for line in log.read_text().splitlines()]
    rows = int(np.load(data, mmap_mode="r").shape[0])
    seconds = sorted(e["seconds"] for e in epochs_seen[1:])
    return rows / seconds[len(seconds) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workloads", default="tabular,pixels")
    args = parser.parse_args()
    procs = [int(p) for p in args.procs.split(",")]
    print(f"device {args.device}, global batch {args.batch_size}, {os.cpu_count()} CPUs")
    print(f"{'workload':<10} {'procs':>5} {'samples/s':>11} {'speed-up':>9} {'efficiency':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads.split(","):
            rows, inputs, flags = WORKLOADS[name]
            data = Path(tmp) / f"{name}.npy"
            rng = np.random.default_rng(0)
            np.save(data, rng.normal(size=(rows, inputs)).astype(np.float32))
            base = None
            for n in procs:
                speed = run(data, n, args.device, args.epochs, flags, args.batch_size)
                base = base or speed
                ratio = speed / base
                print(f"{name:<10} {n:>5} {speed:>11,.0f} {ratio:>8.2f}x {ratio / n:>10.0%}")


if __name__ == "__main__":
    main()
