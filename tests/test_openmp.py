"""The OpenMP wait aecli asks for (aecli/openmp.py): short spins, unless the user chose."""

from __future__ import annotations

import os

import pytest

from aecli.openmp import SHORT_WAIT, threads_sleep, wait_briefly


def test_short_spins_by_default() -> None:
    env: dict[str, str] = {"PATH": "/bin"}
    wait_briefly(env, loaded=False)
    assert env == {"PATH": "/bin", **SHORT_WAIT}
    assert env["GOMP_SPINCOUNT"] == "1000"


def test_a_wait_policy_the_user_chose_is_left_alone() -> None:
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    wait_briefly(env, loaded=False)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_a_spin_count_the_user_chose_is_kept() -> None:
    env = {"GOMP_SPINCOUNT": "300000"}
    wait_briefly(env, loaded=False)
    assert env == {"GOMP_SPINCOUNT": "300000", "KMP_BLOCKTIME": "1"}


def test_nothing_is_asked_once_torch_is_loaded() -> None:
    """Its runtime read the wait when it loaded: the environment keeps saying which one."""
    env: dict[str, str] = {"PATH": "/bin"}
    wait_briefly(env, loaded=True)
    assert env == {"PATH": "/bin"} and not threads_sleep(env)


@pytest.mark.parametrize(
    ("first", "spins"), [("", "1000"), ("import torch", None)], ids=["command", "torch-first"]
)
def test_the_cli_asks_only_before_torch_loads(first: str, spins: str | None) -> None:
    """``main`` in a process that has not loaded torch (the command) asks for short spins; in
    one that has (a notebook that imported torch first) it leaves the environment alone."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", *SHORT_WAIT)}
    code = f"{first}\nimport os\nfrom aecli.cli import main\nmain(['--version'])\n"
    code += "print(os.environ.get('GOMP_SPINCOUNT'))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == str(spins)


@pytest.mark.parametrize(
    ("env", "sleep"),
    [
        ({}, False),  # the runtime's own wait: the Python API
        (dict(SHORT_WAIT), True),  # the command's
        ({"OMP_WAIT_POLICY": "passive"}, True),
        ({"OMP_WAIT_POLICY": "ACTIVE", **SHORT_WAIT}, False),  # the user's policy wins
        ({"GOMP_SPINCOUNT": "300000", "KMP_BLOCKTIME": "1"}, False),  # GNU's spin decides
        ({"KMP_BLOCKTIME": "0"}, True),
        ({"KMP_BLOCKTIME": "200"}, False),
    ],
)
def test_threads_sleep_where_the_wait_is_short(env: dict[str, str], sleep: bool) -> None:
    assert threads_sleep(env) is sleep


def test_a_step_must_be_larger_for_threads_that_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 512-wide embedding's 512-256-32 model at batch 64 (18M multiply-adds a step) trained
    1.5x slower on 2 threads than on 1 under the command's short wait, 1.2x faster with
    spinning threads: it gets 1 thread under the first, every core under the second."""
    from aecli.training import choose_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        monkeypatch.delenv(name, raising=False)
    assert choose_threads(0, 1.8e7) == 4
    assert choose_threads(0, 1e6) == 1
    assert choose_threads(0, 1.8e7, processes=2) == 2  # torchrun's processes share the cores
    for name, value in SHORT_WAIT.items():
        monkeypatch.setenv(name, value)
    assert choose_threads(0, 1.8e7) == 1
    assert choose_threads(0, 2e8) == 4  # the statistics' products, a big model's steps
    assert choose_threads(3, 1e6) == 3  # --threads wins
