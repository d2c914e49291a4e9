"""Start-up cost of aecli commands, against the bare imports they cannot avoid.

Run: ``python benchmarks/startup.py [--repeat 7]``. Each command runs in a fresh
process; the table gives the median wall time. Targets: ``--help`` under 0.15 s
(issue 15) and usage errors under 0.25 s, without importing torch (issue 4);
``sample -n 10`` within 0.5 s of a bare ``import torch``. The last two rows compare
building torch.optim.Adam (which imports torch._dynamo) with aecli's FusedAdam, each
in a fresh process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable


def timed(command: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    data, model = folder / "d.csv", folder / "vae.safetensors"
    subprocess.run([PY, "-m", "aecli", "example", "-o", str(data)], check=True)
    subprocess.run(
        [PY, "-m", "aecli", "train", str(data), "-o", str(model), "--kind", "vae", "-q"],
        check=True,
    )
    aecli = [PY, "-m", "aecli"]
    params = "[torch.zeros(3, requires_grad=True)]"
    out = str(folder / "m.safetensors")
    adam = f"import torch; torch.optim.Adam({params}, fused=True)"
    fused = (
        "import torch; from aecli.config import TrainConfig; from aecli.training import "
        "make_optimizer; make_optimizer(torch.nn.Linear(3, 1), TrainConfig())"
    )
    rows = [
        ("python -c pass", [PY, "-c", "pass"]),
        ("aecli --help", [*aecli, "--help"]),
        ("aecli train --help", [*aecli, "train", "--help"]),
        ("aecli train x.csv --epochs 0 (usage error)", [*aecli, "train", "x.csv", "--epochs", "0"]),
        ("python -c 'import torch'", [PY, "-c", "import torch"]),
        ("aecli sample vae -n 10", [*aecli, "sample", str(model), "-n", "10"]),
        ("aecli train digits --epochs 1", [*aecli, "train", str(data), "-o", out, "--epochs", "1"]),
        ("import torch; torch.optim.Adam(...)", [PY, "-c", adam]),
        ("import torch; aecli's make_optimizer(...)", [PY, "-c", fused]),
    ]
    print(f"{'command':<46} {'median s':>9}")
    results = {}
    for name, command in rows:
        results[name] = timed(command, args.repeat)
        print(f"{name:<46} {results[name]:>9.3f}", flush=True)
    gap = results["aecli sample vae -n 10"] - results["python -c 'import torch'"]
    print(f"\nsample -n 10 minus bare import torch: {gap:+.3f} s (target <= 0.5)")


if __name__ == "__main__":
    main()
