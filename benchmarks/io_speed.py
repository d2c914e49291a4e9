"""Data in and out: parse speed against numpy.loadtxt, and memory that stays flat.

Run: ``python benchmarks/io_speed.py [--rows 100000]``. Writes a 32-column CSV and
.npy of ROWS rows and of 10 x ROWS rows into a temporary folder, then:

1. parsing: rows/s of aecli's reader, numpy.loadtxt and pandas.read_csv on the
   small CSV, in this process;
2. commands: each run as a fresh process, with its wall time and peak RSS (from
   wait4): reading (``evaluate``), ``encode`` to CSV, ``reconstruct`` to .npy,
   and ``train`` on the .npy; for the small and the 10x input. The issue's bound:
   the 10x input's peak RSS within 100 MB of the small one's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aecli.io import TableWriter, read_table

WIDTH = 32


def make_inputs(folder: Path, rows: int, tag: str) -> tuple[Path, Path]:
    """A 32-column table with structure, as CSV (via aecli's writer) and .npy (memory-mapped)."""
    csv_path, npy_path = folder / f"{tag}.csv", folder / f"{tag}.npy"
    mixing = np.random.default_rng(0).normal(size=(4, WIDTH)).astype(np.float32)
    array = np.lib.format.open_memmap(npy_path, mode="w+", dtype=np.float32, shape=(rows, WIDTH))
    names = [f"c{i}" for i in range(WIDTH)]
    with TableWriter(str(csv_path), names, (WIDTH,)) as writer:
        for start in range(0, rows, 50_000):
            n = min(50_000, rows - start)
            rng = np.random.default_rng(start)
            block = rng.normal(size=(n, 4)).astype(np.float32) @ mixing
            block += 0.1 * rng.normal(size=block.shape).astype(np.float32)
            array[start : start + n] = block
            writer.write(block)
    array.flush()
    del array
    return csv_path, npy_path


def run(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one fresh process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        detail = process.stderr.read().decode()  # type: ignore[union-attr]
        raise SystemExit(f"failed: {' '.join(command)}: {detail}")
    return seconds, usage.ru_maxrss / 1024


def best(repeats: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    small = make_inputs(folder, args.rows, "small")
    large = make_inputs(folder, 10 * args.rows, "large")

    import pandas

    n = args.rows
    ours = best(2, lambda: read_table(str(small[0])))
    loadtxt = best(2, lambda: np.loadtxt(small[0], delimiter=",", skiprows=1, dtype=np.float32))
    frame = best(2, lambda: pandas.read_csv(small[0], dtype=np.float32).to_numpy())
    print(f"1. parsing {n} rows x {WIDTH} (CSV, {small[0].stat().st_size / 1e6:.0f} MB)")
    print(f"   {'reader':<22}{'rows/s':>12}{'vs loadtxt':>12}")
    for name, seconds in (("numpy.loadtxt", loadtxt), ("aecli", ours), ("pandas.read_csv", frame)):
        print(f"   {name:<22}{n / seconds:>12,.0f}{loadtxt / seconds:>12.2f}")

    aecli = [sys.executable, "-m", "aecli"]
    model = folder / "m.safetensors"
    subprocess.run([*aecli, "train", str(small[1]), "-o", str(model), "--epochs", "1", "-q"],
                   check=True)  # fmt: skip
    print(f"\n2. commands, fresh processes: {n} rows vs {10 * n} rows")
    head = f"   {'command':<32}{'rows/s':>10}{'peak MB':>9}{'rows/s 10x':>12}"
    print(head + f"{'peak MB 10x':>12}{'RSS diff':>10}")
    out = {"z": str(folder / "z.csv"), "r": str(folder / "r.npy"), "t": str(folder / "t.st")}
    commands = {
        "read (evaluate CSV)": lambda d: ["evaluate", str(model), str(d[0])],
        "encode CSV -> CSV": lambda d: ["encode", str(model), str(d[0]), "-o", out["z"]],
        "reconstruct npy -> npy": lambda d: ["reconstruct", str(model), str(d[1]), "-o", out["r"]],
        "train npy, 1 epoch (streamed)": lambda d: [
            "train", str(d[1]), "-o", out["t"] + ".safetensors", "--epochs", "1",
            "--chunk-rows", "65536", "-q",
        ],
    }  # fmt: skip
    for name, make in commands.items():
        (s1, m1), (s2, m2) = run([*aecli, *make(small)]), run([*aecli, *make(large)])
        rates = f"{n / s1:>10,.0f}{m1:>9.0f}{10 * n / s2:>12,.0f}{m2:>12.0f}"
        print(f"   {name:<32}{rates}{m2 - m1:>+10.0f}", flush=True)


if __name__ == "__main__":
    main()
