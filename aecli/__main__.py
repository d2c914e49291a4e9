"""The ``aecli`` command: ``python -m aecli`` and the console script both start here."""

import sys


def run() -> int:
    """Load the CLI and run it; a Ctrl-C that lands while it is still loading is one line, 130.

    ``aecli.cli.main`` handles signals once it runs; before that (importing typer
    and the commands, a fraction of a second on a busy machine) Python would
    print a KeyboardInterrupt traceback.
    """
    try:
        from aecli.cli import main

        return main()
    except KeyboardInterrupt:
        sys.stderr.write("aecli: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(run())
