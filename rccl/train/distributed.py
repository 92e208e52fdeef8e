"""Multi-process training through torchrun: process group set-up from the environment, and gathering
features across ranks WITH their gradient, so that every rank's loss sees the global batch.

Why the gradients come out exact: each rank computes the same global loss L; the backward of the
differentiable all_gather sums, for rank r's own features, the gradient that every rank computed, i.e.
world_size * dL/dz_r; DDP then averages parameter gradients over ranks, dividing that factor out. So a
2-rank step equals one process on the concatenated batch (tests/test_train_ddp.py checks it).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rccl.ranks import active, from_main, on_every_rank  # noqa: F401  (the agreements, re-exported for training)
from rccl.train.elastic import launch_from_env


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started_group: bool = False   # init_from_env formed the process group: end_process_group ends it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device_type: str) -> DistInfo:
    """torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them this is a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    started = not dist.is_initialized()
    if started:
        backend = "nccl" if device_type == "cuda" else "gloo"
        launch = launch_from_env()
        if launch.job is None:
            dist.init_process_group(backend=backend)
        else:
            # torchrun's agent hosts the store and keeps it over its restarts: a restarted worker could read
            # the addresses the group of the killed attempt wrote there and connect to dead peers (pytorch
            # issue 135712, seen here as gloo's "Connection refused"); each attempt gets keys of its own
            store, rank, world = next(dist.rendezvous("env://"))
            dist.init_process_group(backend=backend, store=dist.PrefixStore(f"rccl/attempt_{launch.restart}", store),
                                    rank=rank, world_size=world)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), started)


def end_process_group(info: DistInfo) -> None:
    """Destroy the process group init_from_env formed (a caller's own group is the caller's to end)."""
    if info.started_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Rows of x from every rank, concatenated in rank order; gradient flows back to each rank's rows."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def mean_over_ranks(value: float, device) -> float:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def broadcast_state(module: torch.nn.Module) -> None:
    """Every tensor of the module's state_dict (parameters and buffers) set to rank 0's, in place."""
    if not active():
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
