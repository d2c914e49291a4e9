"""The ``aecli`` command: ``python -m aecli`` and the console script both start here."""

import os
import sys

# The root help and --version need nothing but a string: typer and the commands would
# cost about 0.1 s more (aecli/helptext.py keeps typer's help, generated and tested).
ROOT_HELP_ARGS = ([], ["--help"], ["-h"])


def run() -> int:
    """Load the CLI and run it; a Ctrl-C that lands while it is still loading is one line, 130.

    ``aecli.cli.main`` handles signals once it runs; before that (importing typer
    and the commands, a fraction of a second on a busy machine) Python would
    print a KeyboardInterrupt traceback.
    """
    try:
        completing = "_AECLI_COMPLETE" in os.environ  # a shell asking: the real app answers
        if sys.argv[1:] in ROOT_HELP_ARGS and not completing and _eighty_columns() and sys.stdout:
            from aecli.helptext import ROOT

            return tell(ROOT)
        if sys.argv[1:] == ["--version"] and sys.stdout is not None:
            from aecli import __version__

            return tell(f"aecli {__version__}\n")
        from aecli.cli import main

        return main()
    except KeyboardInterrupt:
        sys.stderr.write("aecli: interrupted\n")
        return 130


def _eighty_columns() -> bool:
    """Whether click would wrap the help at 80 columns, as the stored copy is."""
    import shutil

    return shutil.get_terminal_size().columns >= 80


def tell(text: str) -> int:
    """Print the root help or the version; a closed or full stdout exits as in aecli.cli.main."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # ``aecli --help | head -1``: quietly, as aecli.cli.main does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError as exc:  # ``> /dev/full``
        sys.stderr.write(f"aecli: error: stdout: {exc.strerror or exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())
