"""Write docs/cli.md from ``aecli --help``; with ``--check``, fail if it is stale.

Run after changing a flag: ``python docs/gen_cli.py``. The test suite runs
the check, so the reference never drifts from the code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TARGET = Path(__file__).with_name("cli.md")


def commands() -> list[list[str]]:
    """The top level, then every command the app registers, so none can be left out."""
    from aecli.cli import app

    names = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    return [[], *([name] for name in names)]


def render_help(command: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "PY_COLORS")}
    env.update(TERMINAL_WIDTH="100", COLUMNS="100", NO_COLOR="1", TERM="dumb")
    env["_TYPER_FORCE_DISABLE_TERMINAL"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "aecli", *command, "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    lines = [line.rstrip() for line in result.stdout.strip("\n").splitlines()]
    return "\n".join(lines).strip("\n")


def render() -> str:
    parts = [
        "# Command reference",
        "",
        "Generated from `aecli --help` by `python docs/gen_cli.py`; do not edit by hand.",
    ]
    for command in commands():
        title = " ".join(["aecli", *command])
        parts += ["", f"## `{title}`", "", "```text", render_help(command), "```"]
    return "\n".join(parts) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not TARGET.exists() or TARGET.read_text() != text:
            print("docs/cli.md is stale: run python docs/gen_cli.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
