"""How long idle OpenMP threads spin before they sleep, chosen before torch loads its runtime.

OpenMP threads that wait by spinning collapse when another program holds a core:
next to one busy process the 784-wide model trained 3.1-4.2x (fp32) and 3.6-4.6x
(bf16) slower with the runtime's default spin, up to 9x with longer spins
(``benchmarks/threads_load.py``, 2 cores). A short spin before sleeping bounds that
at 1.5-2.0x. Its price is on a quiet machine, where a thread that slept must be
woken (about 50 us on a 2-core VM) when the next parallel region starts: over ten
runs each, that model trained 5% slower in fp32 (the default) and 16% slower in
bf16, whose short products leave the threads waiting between them more often
(single runs: 2% faster to 38% slower). A wait policy the user chose wins:
``OMP_WAIT_POLICY=ACTIVE`` on a machine that runs nothing else.

The runtime reads these once, when torch loads it, so they go into the process
environment before the first ``import torch``; torch-free on purpose. Once torch is loaded
(a notebook that imported it before calling the CLI's ``main``) they are left alone: the
runtime has its wait already, and ``threads_sleep`` must describe that one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

# GNU OpenMP (torch's Linux wheels) counts spins; Intel's OpenMP counts milliseconds.
SHORT_WAIT = {"GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "1"}


def wait_briefly(env: MutableMapping[str, str] = os.environ, loaded: bool | None = None) -> None:
    """Ask for short OpenMP spins in ``env``, unless it names a wait policy or a spin already,
    or torch is ``loaded`` (by default: whether this process has imported it), when the
    runtime has read them: set then, they would only mislead ``threads_sleep``, which would
    give a model one thread where the runtime's spinning threads would share its steps."""
    if "OMP_WAIT_POLICY" in env or ("torch" in sys.modules if loaded is None else loaded):
        return
    for name, value in SHORT_WAIT.items():
        env.setdefault(name, value)


def threads_sleep(env: MutableMapping[str, str] = os.environ) -> bool:
    """Whether idle OpenMP threads sleep soon after a parallel region, so that each region
    must wake them: the short wait above, a short one the user set, or ``PASSIVE``."""
    policy = env.get("OMP_WAIT_POLICY", "").strip().upper()
    if policy:
        return policy == "PASSIVE"
    spins, block = env.get("GOMP_SPINCOUNT", ""), env.get("KMP_BLOCKTIME", "")
    if spins.isdigit():  # GNU OpenMP's, torch's Linux wheels' runtime: it decides where set
        return int(spins) <= int(SHORT_WAIT["GOMP_SPINCOUNT"])
    return block.isdigit() and int(block) <= int(SHORT_WAIT["KMP_BLOCKTIME"])
