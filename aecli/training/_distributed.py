"""Training with several processes under ``torchrun``: who we are, and what ranks share.

torchrun starts one process per device and tells each its place through the
environment (RANK, WORLD_SIZE, LOCAL_RANK). Every process reads the data,
fits the same scaler and draws the same shuffles (everything is seeded), and
takes its share of every global batch; gradients are summed, weighted by each
share's rows, so N processes take the steps one process takes. A plain run
never imports ``torch.distributed``: ``World()`` is a world of one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from aecli.errors import UsageError

# A rank that hangs (not one that dies: torchrun stops the job then) is given
# up on after this long, so a job never waits forever on a lost peer.
TIMEOUT_S = float(os.environ.get("AECLI_DIST_TIMEOUT", "300"))


@dataclass(frozen=True)
class World:
    """This process's place among the training processes; the default is a plain run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Rank 0 alone writes files and speaks."""
        return self.rank == 0

    @property
    def many(self) -> bool:
        return self.size > 1

    def share(self, rows: int) -> tuple[int, int]:
        """This rank's slice ``[lo, hi)`` of a batch of ``rows`` (sizes differ by at most 1)."""
        return self.rank * rows // self.size, (self.rank + 1) * rows // self.size


def from_env(environ: dict[str, str] | None = None) -> World:
    """The world torchrun describes, or a world of one (no torchrun, or WORLD_SIZE=1)."""
    env = os.environ if environ is None else environ
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", "0"))
        local_size = int(env.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError:
        return World()
    if size <= 1:
        return World()
    return World(rank, size, local_rank, local_size)


def rank_device(world: World, device: torch.device) -> torch.device:
    """This rank's device: on CUDA its own GPU, ``cuda:LOCAL_RANK``, as NCCL needs one each.

    More processes on a node than it has GPUs is a usage error, said before any
    CUDA call (a rank past the last GPU would fail with "invalid device ordinal").
    """
    if not world.many or device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if world.local_rank >= count:
        raise UsageError(
            f"torchrun started {world.local_size} processes on this node, which has {count} "
            f"CUDA device(s), and each needs its own: --nproc-per-node {count}, or --device cpu",
            flag="--device",
        )
    return torch.device("cuda", world.local_rank)


def start(world: World, device: torch.device) -> World:
    """Join the process group: NCCL on CUDA (each rank on ``cuda:LOCAL_RANK``), gloo on CPU."""
    import torch.distributed as dist

    device = rank_device(world, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        timeout = timedelta(seconds=TIMEOUT_S)
        dist.init_process_group(
            backend,
            rank=world.rank,
            world_size=world.size,
            timeout=timeout,
            store=_attempt_store(world, timeout),
        )
    return World(world.rank, world.size, world.local_rank, world.local_size, backend)


def _attempt_store(world: World, timeout: timedelta) -> Any:
    """Under torchrun's agent, a store of this attempt's own keys; None: torch's default.

    The agent's store outlives a restart (--max-restarts), and with it the first attempt's
    group keys: the restarted ranks read the dead ranks' addresses and fail to connect
    ("Gloo connectFullMesh failed ... Connection refused"). A prefix per attempt keeps
    each attempt's keys apart.
    """
    import torch.distributed as dist

    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    store = dist.TCPStore(host, port, world.size, is_master=False, timeout=timeout)
    return dist.PrefixStore(f"aecli/attempt-{attempt}", store)


def agree(world: World, values: dict[str, str], what: str = "flag") -> None:
    """Every rank holds the same ``values``, or each raises the same usage error naming one.

    Ranks started with different flags (an edited job script on one node) would run
    different collectives: gloo aborts in C++ (exit 134) or a rank waits out the timeout.
    One small exchange right after joining turns that into a line naming the difference.
    """
    import torch.distributed as dist

    if not world.many:
        return
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, values)
    first = gathered[0]
    for rank, theirs in enumerate(gathered[1:], start=1):
        for name in sorted(set(first) | set(theirs)):
            if theirs.get(name) != first.get(name):
                flag = "--" + name.replace("_", "-") if what == "flag" else None
                label = "" if flag else f"{name}: "
                raise UsageError(
                    f"{label}rank {rank} has {theirs.get(name)}, rank 0 has {first.get(name)}; "
                    "every process must run the same command on the same data",
                    flag=flag,
                )


def stop() -> None:
    """Leave the process group (a no-op when none was joined)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over every rank, in place."""
    import torch.distributed as dist

    dist.all_reduce(tensor)
    return tensor


class GlobalSum(torch.autograd.Function):
    """A sum over ranks that gradients pass through (the gradient of a sum is a sum).

    The sparse penalty's q is a mean over the global batch: each rank sums its
    codes, this sums the sums, and each rank's codes receive the gradient of
    every rank's share of the loss.
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        return all_sum_(tensor.clone())

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return all_sum_(grad.clone())


@dataclass(frozen=True)
class BatchShare:
    """What a model needs to know while it sees one rank's part of a global batch.

    Noise is drawn for the whole batch and sliced, so every row gets the noise
    it would get in a single process; batch statistics are summed over ranks.
    """

    lo: int
    hi: int
    total: int

    def noise(self, like: torch.Tensor, draw: str, p: float = 0.0) -> torch.Tensor:
        """Standard normal (``draw="normal"``) or Bernoulli(p) noise for this share's rows."""
        shape = (self.total, *like.shape[1:])
        full = torch.empty(shape, dtype=like.dtype, device=like.device)
        if draw == "normal":
            full.normal_()
        else:
            full.bernoulli_(p)
        return full[self.lo : self.hi]

    def batch_mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over the global batch of ``values`` (rows on dim 0), with gradients."""
        return GlobalSum.apply(values.sum(0)) / self.total


class Sync:
    """What several processes do together at each step: split the batch, sum the gradients.

    Each rank's loss is its share's mean; weighted by the share's rows over the
    batch's and summed over ranks, the gradients are the global batch's mean
    (exact for shares of unequal size). They travel in one flat buffer with
    one more value: whether any rank was asked to stop.
    """

    def __init__(
        self, world: World, model: torch.nn.Module, stop_requested: Callable[[], bool] | None
    ) -> None:
        self.world = world
        self.model = model
        self.params = list(model.parameters())
        self.stop_requested = stop_requested or (lambda: False)
        self.weight = 1.0

    def begin(self, rows: int) -> tuple[int, int]:
        """This rank's rows of a global batch of ``rows``; the model is told its share."""
        lo, hi = self.world.share(rows)
        self.model.share = BatchShare(lo, hi, rows)  # an aecli Autoencoder's
        self.weight = (hi - lo) / rows
        return lo, hi

    def reduce(self, scaled: bool) -> bool:
        """Sum the weighted gradients over ranks; True when a rank asks everyone to stop.

        ``scaled``: the gradients already carry the share's weight (the loss was scaled).
        """
        grads = [p.grad for p in self.params]
        flag = torch.full((1,), float(self.stop_requested()), device=self.params[0].device)
        flat = torch.cat([*(g.reshape(-1) for g in grads), flag])  # type: ignore[union-attr]
        if not scaled:
            flat[:-1].mul_(self.weight)
        all_sum_(flat)
        offset = 0
        for g in grads:
            assert g is not None
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        return bool(flat[-1] > 0)

    def end(self) -> None:
        self.model.share = None
