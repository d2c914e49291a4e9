"""``python -m aecli``: the same entry point as the ``aecli`` console script."""

import sys

from aecli.cli import main

sys.exit(main())
