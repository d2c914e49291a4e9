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
    joined = block.replace("\\\n", " ")  # a trailing backslash continues the line, as in sh
    commands = [line for line in joined.splitlines()[1:] if line.strip()]
    assert len(commands) == 2
    assert "aecli example digits" in commands[0] and "aecli train" in commands[0]
    assert "pytest" in commands[1] and ".[dev]" in commands[1]
    assert all("-c constraints.txt" in c for c in commands)


def test_every_relative_link_in_the_readme_and_docs_resolves() -> None:
    """The README links to the pages its sections moved to: each must exist (anchors aside)."""
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
    readme = (ROOT / "README.md").read_text()
    for moved in ("resuming", "torchrun", "modelfile", "speed", "training", "formats"):
        assert f"(docs/{moved}.md)" in readme, moved
    assert len(readme.splitlines()) <= 180  # a page a newcomer scans (issue 27)


def test_the_tutorials_tables_are_what_its_commands_print() -> None:
    """Issue 30 item 6: copied as written, the tutorial's commands printed other numbers."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_tutorial.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_every_commands_help_names_every_format_the_docs_list() -> None:
    """Issue 36: DATA and -o helps listed csv/tsv/npy only, though Parquet and Arrow work."""
    import re

    from aecli.cli.options import INPUT_FORMATS, OUTPUT_FORMATS
    from tests.conftest import invoke

    formats = (ROOT / "docs" / "formats.md").read_text()
    inputs = formats.split("- Input:")[1].split("\n- ")[0]
    outputs = formats.split("- Output:")[1].split("\n- ")[0]
    for listed, said in ((inputs, INPUT_FORMATS), (outputs, OUTPUT_FORMATS)):
        documented = set(re.findall(r"`(\.[a-z.]+)`", listed))
        assert documented and documented <= set(re.findall(r"\.[a-z]+(?:\.gz)?", said)) | {
            ".gz",
            ".feather",
            ".ndjson",
        }, (documented, said)
    for command in ("train", "encode", "reconstruct", "score", "evaluate", "sample"):
        help_text = " ".join(invoke([command, "--help"]).text.split())
        if "DATA" in help_text:
            assert ".parquet, .arrow/.feather or .jsonl" in help_text, command
        if "--output" in help_text and command != "train":
            assert ".parquet, .arrow, .jsonl" in help_text, command
