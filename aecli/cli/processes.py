"""``aecli train`` under torchrun: the same flags on every rank, and leaving together.

Joining the group is aecli.training.prepare's (``join=True``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aecli.training import World


def agree(world: World, params: dict[str, Any]) -> None:
    """Every rank was started with the same flags: else exit 2 naming the one that differs."""
    if not world.many:
        return
    from aecli.training import agree as agree_values

    flags = {k: str(v) for k, v in params.items() if k != "ctx"}
    agree_values(world, flags)


def finish(world: World) -> None:
    """Wait until rank 0 has written the model, then leave the group.

    Without the wait, the other ranks would exit first and torchrun, seeing
    its workers end, could stop rank 0 mid-write.
    """
    if not world.many:
        return
    import torch.distributed as dist

    from aecli.training import leave_group

    dist.barrier()
    leave_group()
