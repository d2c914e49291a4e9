"""aecli as a Unix filter (issue 37): rows scored as they arrive on a pipe, not per chunk."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import invoke

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="select() on pipes")


@pytest.fixture(scope="module")
def model_and_rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("live")
    rows = np.random.default_rng(0).normal(size=(200, 5))
    data = folder / "x.csv"
    np.savetxt(data, rows, delimiter=",", header="a,b,c,d,e", comments="", fmt="%.5f")
    model = folder / "m.safetensors"
    assert invoke(["train", data, "-o", model, "--epochs", "2", "-q"]).code == 0
    return model, data


def _line(stream: object, within: float) -> tuple[bytes, float]:
    """The next line of a subprocess's stdout and how long it took, failing past ``within``."""
    start = time.monotonic()
    fd = stream.fileno()  # type: ignore[attr-defined]
    line = b""
    while not line.endswith(b"\n"):
        left = within - (time.monotonic() - start)
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        assert ready, f"no output within {within} s (got {line!r})"
        byte = os.read(fd, 1)
        assert byte, "stdout closed"
        line += byte
    return line, time.monotonic() - start


def test_each_row_is_scored_as_it_arrives(model_and_rows: tuple[Path, Path]) -> None:
    model, data = model_and_rows
    lines = data.read_bytes().splitlines(keepends=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "aecli", "score", str(model), "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(lines[0] + lines[1])  # the header and a row: starting takes a while
        process.stdin.flush()
        assert _line(process.stdout, 120)[0] == b"score\n"
        scores = [float(_line(process.stdout, 120)[0])]
        waits = []
        for row in lines[2:22]:  # then a row every 100 ms, each answered before the next
            time.sleep(0.1)
            process.stdin.write(row)
            process.stdin.flush()
            text, waited = _line(process.stdout, 1.0)
            scores.append(float(text))
            waits.append(waited)
        process.stdin.close()
        assert process.wait(timeout=60) == 0, process.stderr.read()  # type: ignore[union-attr]
    finally:
        process.kill()
    whole = invoke(["score", model, data])
    expected = [float(v) for v in whole.text.splitlines()[1:22]]
    np.testing.assert_array_equal(scores, expected)  # batching changes no score
    assert max(waits) < 1.0, waits


def test_a_fast_pipe_still_reads_in_full_batches(model_and_rows: tuple[Path, Path]) -> None:
    from aecli.io.live import LiveLines

    _, data = model_and_rows
    read, write = os.pipe()
    os.write(write, data.read_bytes())
    os.close(write)
    with os.fdopen(read, "rb") as stream:
        lines = LiveLines(stream)
        batches = []
        while batch := lines.take(64):
            batches.append(len(batch))
    assert batches == [64, 64, 64, 9] and lines.number == 201  # no pause: no short batch


def test_a_last_line_without_newline_at_the_end_is_still_a_line(tmp_path: Path) -> None:
    from aecli.io.live import LiveLines

    read, write = os.pipe()
    os.write(write, b"a,b\n1,2\n3,4")
    os.close(write)
    with os.fdopen(read, "rb") as stream:
        assert LiveLines(stream).take(10) == [b"a,b\n", b"1,2\n", b"3,4"]
