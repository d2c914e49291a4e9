"""Training speed with another program busy on one core: does the thread pool collapse?

Run: ``python benchmarks/threads_load.py [--seconds 4] [--precisions fp32,bf16]``.
Each setting trains the 784-512-256-32 autoencoder (batch 256) in a fresh process
for a fixed time, first alone, then while a busy-looping process competes for a
core, and prints steps/s, the slowdown, and the speed alone against the runtime's
default wait (what a short wait costs on a quiet machine). OpenMP threads that
spin while waiting for a descheduled sibling are what collapses; the aecli command
sets GOMP_SPINCOUNT=1000 (and KMP_BLOCKTIME=1 for Intel OpenMP) before torch
starts, unless the user set a wait policy, so waiting threads spin briefly and then
sleep (aecli/openmp.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from aecli.openmp import SHORT_WAIT

WORKER = """
import sys, time, numpy as np
from aecli.config import TrainConfig
from aecli.io import Table
from aecli.training import ModelRequest, prepare
threads, seconds, precision = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
data = np.random.default_rng(0).random((2560, 784), dtype=np.float32)
request = ModelRequest(hidden=(512, 256), latent=32, loss="mse")
config = TrainConfig(epochs=10**6, batch_size=256, precision=precision, threads=threads,
                     val_fraction=0, scale="none")
timed = []  # epochs after the first (10 steps each), and their seconds
start = [0.0]
def on_epoch(stats):
    if stats.epoch == 1:
        start[0] = time.perf_counter()
    else:
        timed.append(stats.seconds)
run = prepare(Table(data, None, (784,)), request, config)
run.execute(on_epoch, lambda: bool(start[0]) and time.perf_counter() - start[0] > seconds)
print(10 * len(timed) / sum(timed))
"""


def rate(threads: int, seconds: float, env: dict[str, str], precision: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(threads), str(seconds), precision],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", *SHORT_WAIT)}
    cores = len(os.sched_getaffinity(0))
    settings = [
        ("2 threads, OpenMP default (active wait)", 2, base),
        ("2 threads, GOMP_SPINCOUNT=1000 (aecli)", 2, {**base, **SHORT_WAIT}),
        ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, {**base, "OMP_WAIT_POLICY": "PASSIVE"}),
        ("1 thread", 1, base),
    ]
    print(f"{cores} cores; busy competitor: one Python busy loop")
    print(
        f"{'setting':<44}{'prec':>5}{'alone/s':>9}{'loaded/s':>10}{'slowdown':>10}"
        f"{'alone vs default':>18}"
    )
    for precision in args.precisions.split(","):
        default = None
        for name, threads, env in settings:
            alone = rate(threads, args.seconds, env, precision)
            default = default or alone  # the first setting: the runtime's own wait
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                time.sleep(0.5)
                loaded = rate(threads, args.seconds, env, precision)
            finally:
                busy.kill()
                busy.wait()
            print(
                f"{name:<44}{precision:>5}{alone:>9.1f}{loaded:>10.1f}{alone / loaded:>9.1f}x"
                f"{alone / default:>18.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
