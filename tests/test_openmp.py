"""The OpenMP wait aecli asks for (aecli/openmp.py): short spins, unless the user chose."""

from __future__ import annotations

from aecli.openmp import SHORT_WAIT, wait_briefly


def test_short_spins_by_default() -> None:
    env: dict[str, str] = {"PATH": "/bin"}
    wait_briefly(env)
    assert env == {"PATH": "/bin", **SHORT_WAIT}
    assert env["GOMP_SPINCOUNT"] == "1000"


def test_a_wait_policy_the_user_chose_is_left_alone() -> None:
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    wait_briefly(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_a_spin_count_the_user_chose_is_kept() -> None:
    env = {"GOMP_SPINCOUNT": "300000"}
    wait_briefly(env)
    assert env == {"GOMP_SPINCOUNT": "300000", "KMP_BLOCKTIME": "1"}
