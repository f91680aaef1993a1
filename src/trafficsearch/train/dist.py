"""Process-group handling in one place, so `torchrun` can launch the same training entry point.

Single-process runs (no RANK/WORLD_SIZE in the environment) never touch torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Read torchrun's environment and join the process group (gloo on CPU, NCCL on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def all_reduce_grads(params: list[torch.nn.Parameter], info: DistInfo, bucket_mb: float = 25.0) -> None:
    """Average gradients over ranks (what DDP does), without wrapping the model: training calls
    encode_image/encode_text rather than forward(), which a DDP wrapper would not see. Gradients are
    flattened into ~25 MB buckets per dtype (DDP's default), one all_reduce each."""
    if not info.distributed:
        return
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    grads = [p.grad for p in params if p.grad is not None]
    buckets: dict[torch.dtype, list[list[torch.Tensor]]] = {}
    limit = bucket_mb * 2**20
    for g in grads:
        lists = buckets.setdefault(g.dtype, [[]])
        if (
            lists[-1]
            and sum(t.numel() * t.element_size() for t in lists[-1]) + g.numel() * g.element_size() > limit
        ):
            lists.append([])
        lists[-1].append(g)
    for lists in buckets.values():
        for bucket in lists:
            flat = _flatten_dense_tensors(bucket)
            tdist.all_reduce(flat)
            flat /= info.world_size
            for g, reduced in zip(bucket, _unflatten_dense_tensors(flat, bucket), strict=True):
                g.copy_(reduced)


def broadcast_module(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's weights (and buffers) everywhere: every rank starts the same model whatever its init."""
    if not info.distributed:
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            tdist.broadcast(tensor, src=0)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        tdist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.distributed and tdist.is_initialized():
        tdist.destroy_process_group()
