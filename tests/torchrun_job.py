"""``aecli`` with one rank failing, for tests/training/test_distributed.py, under torchrun.

With AECLI_TEST_FAIL_RANK=R, rank R runs out of memory in its second epoch,
the way one rank of a real job fails. With AECLI_TEST_KILL_RANK=R and
AECLI_TEST_KILL_AFTER=N, rank R of the first attempt dies by SIGKILL after N
steps, the way a node is lost. Otherwise this is ``python -m aecli``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


def _at_step(step: int, fault: Callable[[], None]) -> None:
    """``fault`` runs at training step ``step`` and every one after.

    Under torchrun the trainer asks ``aecli train``'s stop check (the CLI's
    ``signals.requested``) once a step, as the ranks sum their gradients: the fault lands
    there, inside a step, as a real failure would, and the steps before it are untouched.
    """
    from aecli.cli import signals

    original, calls = signals.requested, [0]

    def requested() -> bool:
        calls[0] += 1
        if calls[0] >= step:
            fault()
        return original()

    signals.requested = requested


def _out_of_memory() -> None:
    raise MemoryError


def _killed() -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    from aecli import cli

    if os.environ.get("AECLI_TEST_FAIL_RANK") == os.environ.get("RANK"):
        _at_step(20, _out_of_memory)  # in the second epoch
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if os.environ.get("AECLI_TEST_KILL_RANK") == os.environ.get("RANK") and first_attempt:
        _at_step(int(os.environ["AECLI_TEST_KILL_AFTER"]) + 1, _killed)
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
