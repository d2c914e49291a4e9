"""The command reference in docs/ is the current --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_cli.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_readme_quick_start_is_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- quickstart -->")[1].split("```")[1]
    commands = [line for line in block.splitlines()[1:] if line.strip()]
    assert len(commands) == 2
    assert "aecli example digits" in commands[0] and "aecli train" in commands[0]
    assert "pytest" in commands[1] and ".[dev]" in commands[1]
    assert all("-c constraints.txt" in c for c in commands)
