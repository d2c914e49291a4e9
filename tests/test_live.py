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


def _as_jsonl(data: Path) -> list[bytes]:
    """The CSV's rows as JSON objects, keys in reverse order, with an id and an extra key."""
    import csv
    import json

    with open(data) as handle:
        rows = list(csv.DictReader(handle))
    return [
        (
            json.dumps(
                {"id": f"r{i}", **{k: float(v) for k, v in reversed(row.items())}, "note": "x"}
            )
            + "\n"
        ).encode()
        for i, row in enumerate(rows)
    ]


@pytest.mark.parametrize("form", ["csv", "jsonl"])
def test_each_row_is_scored_as_it_arrives(model_and_rows: tuple[Path, Path], form: str) -> None:
    model, data = model_and_rows
    lines = data.read_bytes().splitlines(keepends=True)
    if form == "jsonl":  # the first line is a row too: no header
        lines = [b"", *_as_jsonl(data)]
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
        assert _line(process.stdout, 120)[0] == b"score\n"  # stdout is CSV unless --format
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


def test_json_lines_in_and_out(tmp_path: Path, model_and_rows: tuple[Path, Path]) -> None:
    import json

    model, data = model_and_rows
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(_as_jsonl(data)))
    from_csv = [float(v) for v in invoke(["score", model, data]).text.splitlines()[1:]]
    result = invoke(["score", model, events, "--id-column", "id", "--format", "jsonl"])
    assert result.code == 0, result.stderr
    objects = [json.loads(line) for line in result.text.splitlines()]
    assert list(objects[0]) == ["id", "score"] and objects[3]["id"] == "r3"
    assert [o["score"] for o in objects] == pytest.approx(from_csv, rel=1e-6)
    on_stdin = invoke(["score", model, "-"], input=events.read_bytes())  # by its first byte
    assert [float(v) for v in on_stdin.text.splitlines()[1:]] == pytest.approx(from_csv, rel=1e-6)
    out = tmp_path / "codes.jsonl"
    assert invoke(["encode", model, events, "-o", out, "--id-column", "id"]).code == 0
    first = json.loads(out.read_text().splitlines()[0])
    assert list(first)[:2] == ["id", "z0"] and first["id"] == "r0"


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b'{"a": 1, "b": 2, "c": 3, "d": 4}\n', ":2: no key 'e' in this object"),
        (b'{"a": 1, "b": 2, "c": 3, "d": 4, "e": "x"}\n', ":2: \"x\" is not a number (key 'e')"),
        (b'{"a": 1, "b": 2, "c": 3, "d": 4, "e": null}\n', ":2: a null at key 'e' (--allow-nan"),
        (b'{"a": 1, "b": 2, "c": 3, "d": 4, "e": 1e39}\n', ":2: 1e+39 overflows float32 at key"),
        (b'{"a": 1, "b": 2,\n', ":2: not JSON (Expecting property name"),
        (b"[1, 2, 3, 4, 5]\n", ":2: a JSON list, not an object"),
    ],
)
def test_bad_json_lines_name_the_line_and_the_key(
    tmp_path: Path, model_and_rows: tuple[Path, Path], line: bytes, says: str
) -> None:
    model, _ = model_and_rows
    data = tmp_path / "bad.jsonl"
    data.write_bytes(b'{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}\n' + line)
    result = invoke(["score", model, data])
    assert result.code == 1 and result.stdout == b"", result.stderr
    assert f"{data}{says}" in result.stderr, result.stderr
