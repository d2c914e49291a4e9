"""``aecli`` with one rank failing, for tests/test_distributed.py, started by a real torchrun.

With AECLI_TEST_FAIL_RANK=R, rank R runs out of memory in its second epoch,
the way one rank of a real job fails. With AECLI_TEST_KILL_RANK=R and
AECLI_TEST_KILL_AFTER=N, rank R of the first attempt dies by SIGKILL after N
gradient sums, the way a node is lost. Otherwise this is ``python -m aecli``.
"""

from __future__ import annotations

import os
import sys


def _fail_in_second_epoch() -> None:
    import aecli.train

    original = aecli.train._train_epoch
    calls = [0]

    def failing(*args: object, **kwargs: object) -> dict[str, float]:
        calls[0] += 1
        if calls[0] == 2:
            raise MemoryError
        return original(*args, **kwargs)  # type: ignore[arg-type]

    aecli.train._train_epoch = failing  # type: ignore[assignment]


def _die_after(steps: int) -> None:
    import signal

    import aecli.train

    original = aecli.train.Sync.reduce
    calls = [0]

    def dying(self: aecli.train.Sync, scaled: bool) -> bool:
        calls[0] += 1
        if calls[0] > steps:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, scaled)

    aecli.train.Sync.reduce = dying  # type: ignore[method-assign]


def main() -> int:
    from aecli import cli

    if os.environ.get("AECLI_TEST_FAIL_RANK") == os.environ.get("RANK"):
        _fail_in_second_epoch()
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if os.environ.get("AECLI_TEST_KILL_RANK") == os.environ.get("RANK") and first_attempt:
        _die_after(int(os.environ["AECLI_TEST_KILL_AFTER"]))
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
