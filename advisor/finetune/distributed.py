"""Process topology: one process, or one rank of a `torchrun` job (DDP, or FSDP with `fsdp=true`), and the
collectives the loop uses.

Under torchrun every rank runs the same code on its own shard of the micro-batches; rank 0 alone writes
files. With one process every helper here is a no-op, so the loop reads the same either way. DDP keeps a
full copy of the model on every rank and averages the gradients; FSDP (torch's `fully_shard`, FSDP2)
keeps 1/world of each decoder layer's weights on each rank, gathers a layer's weights for its forward and
backward, and reduce-scatters (averages) its gradients: the same arithmetic, less memory per rank.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def wrap_fsdp(module: Any, model: Any, d: Dist) -> Any:
    """`module` (the loss around `model`) sharded with FSDP2 when there are several processes: each
    decoder layer (the classes the model names in `_no_split_modules`) a group of its own, the rest
    (embeddings, final norm, head) the root's. Sharded in place: the module itself is returned."""
    if d.world == 1:
        return module
    from torch.distributed.fsdp import fully_shard

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    for layer in [m for m in base.modules() if type(m).__name__ in names]:
        fully_shard(layer)
    fully_shard(module)
    return module


def is_sharded(module: Any) -> bool:
    return hasattr(module, "set_requires_gradient_sync")  # what fully_shard adds to a module


@contextmanager
def gradient_sync(wrapped: Any, d: Dist, sync: bool) -> Iterator[None]:
    """Inside an accumulation window, only the last micro-batch reduces gradients over the ranks."""
    if d.world == 1 or sync:
        yield
    elif is_sharded(wrapped):
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
    else:
        with wrapped.no_sync():
            yield


def full_trainable_state(model: Any, d: Dist) -> dict[str, Any] | None:
    """Under FSDP, the trainable (LoRA) tensors gathered whole from their shards, keyed as in the model's
    state dict: a collective every rank calls, for rank 0 to save. None when nothing is sharded."""
    from torch.distributed.tensor import DTensor

    state = model.state_dict()
    if d.world == 1 or not any(isinstance(v, DTensor) for v in state.values()):
        return None
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {
        k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu()
        for k, v in state.items()
        if k in trainable
    }


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
