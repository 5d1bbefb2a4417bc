"""Process topology: one process, or one rank of a `torchrun` job (DDP), and the collectives the loop uses.

Under torchrun every rank runs the same code on its own shard of the micro-batches; rank 0 alone writes
files. With one process every helper here is a no-op, so the loop reads the same either way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: str

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun); needs no process group."""
    return int(os.environ.get("RANK", "0"))


def launched_world() -> int:
    """How many processes the launcher started (torchrun and `accelerate launch` set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


RANK0_WAIT_S = 7 * 24 * 3600  # how long the other ranks wait for rank 0's step (advise may take hours)


def rank0_channel(d: Dist) -> Callable[[Any], Any]:
    """A function every rank calls once: rank 0's argument is returned on every rank, the other ranks
    blocking until rank 0 calls it. Call this on every rank before rank 0 starts its long step.

    The wait runs on a gloo group of its own with a long timeout, so a long step on rank 0 (advise,
    before training) does not trip the default group's timeout, which training keeps.
    """
    if d.world == 1:
        return lambda value: value
    from datetime import timedelta

    import torch.distributed as dist

    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=RANK0_WAIT_S))

    def share(value: Any) -> Any:
        box = [value if d.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, group=group)
        return box[0]

    return share


def init_distributed() -> Dist:
    """Single process, or DDP when launched by torchrun (gloo on CPU, NCCL on CUDA)."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = f"cuda:{local}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(launched_rank(), world, local, device)


def one_process() -> Dist:
    """This process alone, even inside a torchrun job: the pilot fine-tunes that rank 0 trains while
    advising (the other ranks wait for its verdict, so no collective can run)."""
    import torch

    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    return Dist(0, 1, local, f"cuda:{local}" if cuda else "cpu")


def wrap_ddp(module: Any, d: Dist) -> Any:
    """The module DDP-wrapped when there are several processes (gradients averaged in backward)."""
    if d.world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[d.local_rank] if d.device.startswith("cuda") else None)


def all_reduce_sum(values: list[float], d: Dist) -> list[float]:
    """Element-wise sum of `values` over all ranks (float64, so token counts stay exact)."""
    if d.world == 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def gather_objects(obj: Any, d: Dist) -> list[Any]:
    """Every rank's `obj`, in rank order (e.g. the RNG states rank 0 saves in a checkpoint)."""
    if d.world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def shutdown() -> None:
    """Leave the process group, if one was set up: training is over, the rest is rank 0's alone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
