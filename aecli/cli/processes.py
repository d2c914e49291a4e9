"""``aecli train`` under torchrun: join the other processes, let rank 0 speak, leave together."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aecli.errors import UsageError

if TYPE_CHECKING:
    from aecli.distributed import World


def join(device: str, compile_model: bool) -> World:
    """This process's world: one process, or its place in torchrun's group (joined here).

    A plain run returns at once without importing ``torch.distributed``.
    """
    from aecli import distributed

    world = distributed.from_env()
    if not world.many:
        return world
    if compile_model:
        raise UsageError("is not supported under torchrun yet; leave it out", flag="--compile")
    from aecli.device import resolve_device

    return distributed.start(world, resolve_device(device))


def agree(world: World, params: dict[str, Any]) -> None:
    """Every rank was started with the same flags: else exit 2 naming the one that differs."""
    if not world.many:
        return
    from aecli import distributed

    flags = {k: str(getattr(v, "value", v)) for k, v in params.items() if k != "ctx"}
    distributed.agree(world, flags)


def shards(world: World, data: str) -> bool:
    """Under torchrun a .npy file is streamed, each rank reading only its rows of each chunk."""
    return world.many and data.lower().endswith(".npy")


def finish(world: World) -> None:
    """Wait until rank 0 has written the model, then leave the group.

    Without the wait, the other ranks would exit first and torchrun, seeing
    its workers end, could stop rank 0 mid-write.
    """
    if not world.many:
        return
    import torch.distributed as dist

    from aecli import distributed

    dist.barrier()
    distributed.stop()
