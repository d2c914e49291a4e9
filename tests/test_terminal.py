"""Terminals and colour: progress only on a terminal, never any styling in data on stdout."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

SGR = re.compile(rb"\x1b\[[0-9;]*m")


def _run_with_tty_stderr(args: list[object], env: dict[str, str]) -> tuple[int, bytes, bytes]:
    """Run aecli with stdout a pipe and stderr a pseudo-terminal; return (rc, stdout, stderr)."""
    master, slave = pty.openpty()
    with subprocess.Popen(  # closes the stdout pipe on the way out
        [sys.executable, "-m", "aecli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, **env},
    ) as process:
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal closes when the process ends
                break
            if not data:
                break
            chunks.append(data)
        stdout = process.stdout.read()  # type: ignore[union-attr]
        process.wait()
    os.close(master)
    return process.returncode, stdout, b"".join(chunks)


def test_progress_goes_to_the_terminal_and_data_stays_plain(
    tmp_path: Path, table_csv: Path
) -> None:
    env = {"FORCE_COLOR": "1", "TERM": "xterm-256color"}
    model = tmp_path / "m.safetensors"
    rc, stdout, stderr = _run_with_tty_stderr(
        ["train", table_csv, "-o", model, "--epochs", "30"], env
    )
    assert rc == 0 and stdout == b""
    assert b"epoch" in stderr and SGR.search(stderr)  # a coloured bar on the terminal
    for command in (
        ["encode", model, table_csv],
        ["info", model],
        ["reconstruct", model, table_csv],
    ):
        rc, stdout, _ = _run_with_tty_stderr(command, env)
        assert rc == 0 and stdout and b"\x1b" not in stdout


def test_no_color_is_honoured(tmp_path: Path, table_csv: Path) -> None:
    model = tmp_path / "m.safetensors"
    rc, _, stderr = _run_with_tty_stderr(
        ["train", table_csv, "-o", model, "--epochs", "30"], {"NO_COLOR": "1"}
    )
    assert rc == 0 and b"epoch" in stderr
    assert not SGR.search(stderr)


def test_quiet_on_a_terminal_prints_nothing(tmp_path: Path, table_csv: Path) -> None:
    model = tmp_path / "m.safetensors"
    rc, stdout, stderr = _run_with_tty_stderr(
        ["train", table_csv, "-o", model, "--epochs", "5", "--quiet"], {}
    )
    assert (rc, stdout, stderr) == (0, b"", b"")


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path: Path, table_csv: Path) -> None:
    model = tmp_path / "m.safetensors"
    result = subprocess.run(
        [sys.executable, "-m", "aecli", "train", str(table_csv), "-o", str(model), "--epochs", "5"],
        capture_output=True,
        env={**os.environ, "FORCE_COLOR": "1"},
    )
    assert result.returncode == 0
    assert result.stderr.count(b"\n") == 1 and b"\x1b" not in result.stderr
