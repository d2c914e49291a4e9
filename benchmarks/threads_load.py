"""Training speed with another program busy on one core: does the thread pool collapse?

Run: ``python benchmarks/threads_load.py [--seconds 4]``. Each setting trains the
784-512-256-32 autoencoder (batch 256) in a fresh process for a fixed time, first
alone, then while a busy-looping process competes for a core, and prints steps/s
and the slowdown. OpenMP threads that spin while waiting for a descheduled
sibling are what collapses; the aecli command sets GOMP_SPINCOUNT=1000 (and
KMP_BLOCKTIME=1 for Intel OpenMP) before torch starts, unless the user set a wait
policy, so waiting threads spin briefly and then sleep.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

WORKER = """
import os, sys, time, torch
from aecli.config import ModelConfig, TrainConfig
from aecli.models import build_model
from aecli.train import _train_epoch, make_optimizer
torch.set_num_threads(int(sys.argv[1]))
model = build_model(ModelConfig(n_inputs=784, hidden=(512, 256), latent=32))
opt = make_optimizer(model, TrainConfig())
data = torch.rand(2560, 784)
_train_epoch(model, opt, data, 256)
steps, start = 0, time.perf_counter()
while time.perf_counter() - start < float(sys.argv[2]):
    _train_epoch(model, opt, data, 256)
    steps += 10
print(steps / (time.perf_counter() - start))
"""


def rate(threads: int, seconds: float, env: dict[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(threads), str(seconds)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    cores = len(os.sched_getaffinity(0))
    settings = [
        ("2 threads, OpenMP default (active wait)", 2, base),
        ("2 threads, GOMP_SPINCOUNT=1000 (aecli)", 2, {**base, "GOMP_SPINCOUNT": "1000"}),
        ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, {**base, "OMP_WAIT_POLICY": "PASSIVE"}),
        ("1 thread", 1, base),
    ]
    print(f"{cores} cores; busy competitor: one Python busy loop")
    print(f"{'setting':<44}{'alone/s':>9}{'loaded/s':>10}{'slowdown':>10}")
    for name, threads, env in settings:
        alone = rate(threads, args.seconds, env)
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)
            loaded = rate(threads, args.seconds, env)
        finally:
            busy.kill()
            busy.wait()
        print(f"{name:<44}{alone:>9.1f}{loaded:>10.1f}{alone / loaded:>9.1f}x", flush=True)


if __name__ == "__main__":
    main()
