"""Data in and out: read speed of each format, and memory that stays flat.

Run: ``python benchmarks/io_speed.py [--rows 100000]``. Writes a 32-column table as
CSV, .npy, Parquet and Arrow, of ROWS rows and of 10 x ROWS rows, into a temporary
folder, then:

1. reading the small table, in this process: rows/s and MB/s of numpy.loadtxt,
   pandas.read_csv, pyarrow's CSV reader (multi-threaded) and aecli's reader on the
   CSV; pyarrow and aecli on the Parquet and Arrow files; numpy.load on the .npy;
   with each against numpy.loadtxt;
2. commands: each run as a fresh process, with its wall time and peak RSS (from
   wait4): reading (``evaluate``), ``encode`` of each format to the same format,
   ``reconstruct`` to .npy, and ``train`` on the .npy; for the small and the 10x
   input. The bound: the 10x input's peak RSS within 100 MB of the small one's.
3. streamed Parquet training by row-group layout: the 10x table as one row group,
   20,000-row groups and 1,000-row groups, trained one epoch streamed
   (``--chunk-rows 20000``) beside the same rows as .npy, each a fresh process, with
   its time against the 20k-row groups and against the .npy (issue 35: one group
   within 1.5x of 20k groups and 2x of .npy).
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
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([pa.field(name, pa.float32()) for name in names])
    with (
        pq.ParquetWriter(folder / f"{tag}.parquet", schema) as parquet,
        pa.OSFile(str(folder / f"{tag}.arrow"), "wb") as sink,
        pa.ipc.new_file(sink, schema) as arrow,
    ):
        for start in range(0, rows, 50_000):
            block = np.asarray(array[start : start + 50_000])
            batch = pa.record_batch([pa.array(block[:, j]) for j in range(WIDTH)], schema=schema)
            parquet.write_batch(batch)
            arrow.write_batch(batch)
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
    import pyarrow.csv
    import pyarrow.feather
    import pyarrow.parquet

    n = args.rows
    csv_file, npy_file = small
    parquet_file, arrow_file = csv_file.with_suffix(".parquet"), csv_file.with_suffix(".arrow")
    readers = {
        "CSV  numpy.loadtxt": (csv_file, lambda: np.loadtxt(
            csv_file, delimiter=",", skiprows=1, dtype=np.float32)),
        "CSV  pandas.read_csv": (csv_file, lambda: pandas.read_csv(
            csv_file, dtype=np.float32).to_numpy()),
        "CSV  pyarrow.csv": (csv_file, lambda: pyarrow.csv.read_csv(csv_file)),
        "CSV  aecli": (csv_file, lambda: read_table(str(csv_file))),
        "Parquet  pyarrow": (parquet_file, lambda: pyarrow.parquet.read_table(parquet_file)),
        "Parquet  aecli": (parquet_file, lambda: read_table(str(parquet_file))),
        "Arrow  pyarrow": (arrow_file, lambda: pyarrow.feather.read_table(arrow_file)),
        "Arrow  aecli": (arrow_file, lambda: read_table(str(arrow_file))),
        "npy  numpy.load": (npy_file, lambda: np.load(npy_file)),
        "npy  aecli": (npy_file, lambda: read_table(str(npy_file))),
    }  # fmt: skip
    times = {name: best(2, fn) for name, (_, fn) in readers.items()}
    baseline = times["CSV  numpy.loadtxt"]
    print(f"1. reading {n} rows x {WIDTH}, best of 2 (this machine: {os.cpu_count()} cores)")
    print(f"   {'format  reader':<24}{'MB':>6}{'MB/s':>9}{'rows/s':>13}{'vs loadtxt':>12}")
    for name, (path, _) in readers.items():
        size = path.stat().st_size / 1e6
        seconds = times[name]
        print(f"   {name:<24}{size:>6.0f}{size / seconds:>9.0f}{n / seconds:>13,.0f}"
              f"{baseline / seconds:>12.2f}")  # fmt: skip

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
        "encode Parquet -> Parquet": lambda d: [
            "encode", str(model), str(d[0].with_suffix(".parquet")), "-o", out["z"] + ".parquet"],
        "encode Arrow -> Arrow": lambda d: [
            "encode", str(model), str(d[0].with_suffix(".arrow")), "-o", out["z"] + ".arrow"],
        "encode npy -> npy": lambda d: ["encode", str(model), str(d[1]), "-o", out["z"] + ".npy"],
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
    row_groups(folder, large[1], aecli)


def row_groups(folder: Path, npy_file: Path, aecli: list[str]) -> None:
    """Section 3: streamed training time and memory do not follow the row-group layout."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    array = np.load(npy_file, mmap_mode="r")
    rows = len(array)
    table = pa.table({f"c{j}": np.ascontiguousarray(array[:, j]) for j in range(WIDTH)})
    layouts = {"one row group": rows, "20,000-row groups": 20_000, "1,000-row groups": 1_000}
    files = {}
    for name, size in layouts.items():
        files[name] = folder / f"groups{size}.parquet"
        pq.write_table(table, files[name], row_group_size=size)
    del table
    files[".npy (the same rows)"] = npy_file
    flags = ["--epochs", "1", "--chunk-rows", "20000", "--batch-size", "4096", "-q"]
    model = str(folder / "g.safetensors")
    train = [*aecli, "train"]
    times = {name: run([*train, str(path), "-o", model, *flags]) for name, path in files.items()}
    groups, npy = times["20,000-row groups"][0], times[".npy (the same rows)"][0]
    print(f"\n3. streamed training, {rows} rows x {WIDTH}, by Parquet row-group layout")
    print(f"   {'input':<24}{'seconds':>9}{'peak MB':>9}{'vs 20k groups':>15}{'vs .npy':>9}")
    for name, (seconds, peak) in times.items():
        print(f"   {name:<24}{seconds:>9.2f}{peak:>9.0f}{seconds / groups:>15.2f}"
              f"{seconds / npy:>9.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
