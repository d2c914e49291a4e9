"""Run docs/tutorial.md's commands and write their numbers into its tables.

Run: ``python docs/gen_tutorial.py`` (about half a minute on 2 cores) after a change that
moves results; ``--check`` says which figure moved by more than 3% instead of writing.
Each table between ``<!-- tutorial:NAME -->`` and ``<!-- /tutorial -->`` is rewritten from
the summary lines of the commands in TABLES, run on the shipped digits (``digits.npy``)
exactly as the tutorial shows them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import tempfile
from pathlib import Path

TUTORIAL = Path(__file__).with_name("tutorial.md")
# Each table: its header, and per row the label and the train flags after 'digits.csv'.
TABLES: dict[str, tuple[str, list[tuple[str, list[str], tuple[str, ...]]]]] = {
    "basic": (
        "| command | val loss |\n| --- | --- |",
        [
            ("default (one hidden layer of 64, 16 codes)", [], ("val loss",)),
            ("`--hidden none` (one layer each way)", ["--hidden", "none"], ("val loss",)),
            ("`--hidden 48,32 --tied`", ["--hidden", "48,32", "--tied"], ("val loss",)),
        ],
    ),
    "denoise": (
        "| noise | training loss (noisy inputs) | val loss (clean inputs) |\n| --- | --- | --- |",
        [
            (
                "`gaussian`, sigma 0.2 (scaled units)",
                ["--kind", "denoise", "--noise", "gaussian", "--noise-std", "0.2"],
                ("loss", "val loss"),
            ),
            (
                "`dropout`, 30% of pixels zeroed",
                ["--kind", "denoise", "--noise", "dropout", "--dropout", "0.3"],
                ("loss", "val loss"),
            ),
        ],
    ),
    "vae": (
        "| latent | reconstruction (nats/row) | latent KL (nats/row) | val loss |\n"
        "| --- | --- | --- | --- |",
        [
            ("16", ["--kind", "vae"], ("reconstruction", "latent", "val loss")),
            ("2", ["--kind", "vae", "--latent", "2"], ("reconstruction", "latent", "val loss")),
        ],
    ),
}


def summary_terms(flags: list[str], folder: Path) -> dict[str, float]:
    """Train as the tutorial shows, and read the terms of its summary line."""
    from aecli.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["train", str(folder / "digits.npy"), "-o", str(folder / "m.safetensors"),
                     *flags])  # fmt: skip
    if code != 0:
        raise SystemExit(f"train {' '.join(flags)} failed: {err.getvalue()}")
    line = err.getvalue().strip().splitlines()[-1]
    found = re.findall(r"(val loss|[a-z]+) (-?[0-9.e+-]+)", line.split("):", 1)[1])
    return {name: float(value) for name, value in found}


def tables() -> dict[str, str]:
    from aecli.cli import main

    folder = Path(tempfile.mkdtemp())
    with contextlib.redirect_stderr(io.StringIO()):
        main(["example", "digits", "-o", str(folder / "digits.npy")])
    written = {}
    for name, (header, rows) in TABLES.items():
        lines = [header]
        for label, flags, terms in rows:
            found = summary_terms(flags, folder)
            lines.append("| " + " | ".join([label, *(f"{found[t]:.3g}" for t in terms)]) + " |")
        written[name] = "\n".join(lines)
    return written


def _blocks(text: str) -> dict[str, str]:
    pattern = r"<!-- tutorial:(\w+) -->\n(.*?)\n<!-- /tutorial -->"
    return dict(re.findall(pattern, text, flags=re.S))


def numbers(table: str) -> list[float]:
    cells = [c for line in table.splitlines()[2:] for c in line.split("|")[2:-1]]
    return [float(c) for c in cells]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args()
    text = TUTORIAL.read_text()
    have, now = _blocks(text), tables()
    if args.check:
        moved = [
            f"{name}: {a} -> {b}"
            for name in TABLES
            for a, b in zip(numbers(have[name]), numbers(now[name]), strict=True)
            if abs(a - b) > 0.03 * abs(b)
        ]
        print("\n".join(moved) or "docs/tutorial.md is current", file=sys.stderr)
        return 1 if moved else 0
    for name, table in now.items():
        marker = f"<!-- tutorial:{name} -->\n"
        text = text.replace(marker + have[name] + "\n", marker + table + "\n")
    TUTORIAL.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
