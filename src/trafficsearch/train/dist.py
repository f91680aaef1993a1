"""Process-group handling in one place, so `torchrun` can launch the same training entry point.

Single-process runs (no RANK/WORLD_SIZE in the environment) never touch torch.distributed.

Why the timeout (train.dist_timeout_s): every collective and barrier of the group inherits it (NCCL's
watchdog included), so rank 0's validation and checkpoint hand-off may take that long before the other
ranks give up, and a dead rank is reported after it rather than hanging forever.
Why `GradReducer`: it overlaps the gradient all-reduce with backward as DDP does (buckets launched
asynchronously from post-accumulate-grad hooks, in a fixed order on every rank) without wrapping the model:
training calls encode_image/encode_text rather than forward(), which a DDP wrapper would not see.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as tdist

DEFAULT_TIMEOUT_S = 1800


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


def init_distributed(device_type: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistInfo:
    """Read torchrun's environment and join the process group (gloo on CPU, NCCL on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not tdist.is_initialized():
        tdist.init_process_group(
            backend="nccl" if device_type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s)
        )
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


class GradReducer:
    """Average gradients over ranks while backward still runs (what DDP's reducer does).

    Parameters are cut into ~`bucket_mb` buckets per dtype in reverse registration order (roughly the order
    backward produces them). A post-accumulate-grad hook marks a parameter ready; when a bucket is complete
    and every earlier bucket has been launched, its flattened gradients go out in one async all_reduce, so
    every rank launches the same collectives in the same order. `finish()` launches what backward left
    (parameters without a gradient this step are skipped on every rank alike), waits, and writes the
    averages back. Only the last micro-batch of an accumulated step arms the hooks (`arm()`).
    """

    def __init__(self, params: list[torch.nn.Parameter], info: DistInfo, bucket_mb: float = 25.0) -> None:
        self.info = info
        self.buckets: list[list[torch.nn.Parameter]] = []
        self.armed = False
        self._handles = []
        if not info.distributed:
            return
        limit = bucket_mb * 2**20
        open_by_dtype: dict[torch.dtype, int] = {}
        sizes: list[int] = []
        for p in reversed(params):
            b = open_by_dtype.get(p.dtype)
            nbytes = p.numel() * p.element_size()
            if b is None or (self.buckets[b] and sizes[b] + nbytes > limit):
                b = len(self.buckets)
                self.buckets.append([])
                sizes.append(0)
                open_by_dtype[p.dtype] = b
            self.buckets[b].append(p)
            sizes[b] += nbytes
        self.bucket_of = {id(p): b for b, bucket in enumerate(self.buckets) for p in bucket}
        for p in params:
            self._handles.append(p.register_post_accumulate_grad_hook(self._ready))
        self._reset()

    def _reset(self) -> None:
        self.pending = [{id(p) for p in b} for b in self.buckets]
        self.next = 0
        self.works: list[tuple[int, list[torch.Tensor], torch.Tensor, object]] = []

    def arm(self) -> None:
        """The next backward is the step's last: reduce as gradients become ready."""
        self.armed = self.info.distributed

    def _ready(self, p: torch.nn.Parameter) -> None:
        if not self.armed:
            return
        b = self.bucket_of[id(p)]
        if b < self.next:
            raise RuntimeError("a parameter's gradient changed after its bucket was all-reduced")
        self.pending[b].discard(id(p))
        while self.next < len(self.buckets) and not self.pending[self.next]:
            self._launch(self.next)
            self.next += 1

    def _launch(self, b: int) -> None:
        from torch._utils import _flatten_dense_tensors

        grads = [p.grad for p in self.buckets[b] if p.grad is not None]
        if not grads:
            return
        flat = _flatten_dense_tensors(grads)
        self.works.append((b, grads, flat, tdist.all_reduce(flat, async_op=True)))

    def finish(self) -> None:
        """Launch the buckets backward did not complete, wait for all, write the averages into .grad."""
        if not self.info.distributed:
            return
        from torch._utils import _unflatten_dense_tensors

        while self.next < len(self.buckets):
            self._launch(self.next)
            self.next += 1
        for _, grads, flat, work in self.works:
            work.wait()
            flat /= self.info.world_size
            for g, reduced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
                g.copy_(reduced)
        self.armed = False
        self._reset()


def broadcast_module(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's weights (and buffers) everywhere: every rank starts the same model whatever its init."""
    if not info.distributed:
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            tdist.broadcast(tensor, src=0)


@torch.no_grad()
def all_gather_cat(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Every rank's rows in rank order, without gradient (BLIP's concat_all_gather: momentum features and
    ids for the ITC queue); equal shapes on every rank."""
    if not info.distributed:
        return x
    parts = [torch.empty_like(x) for _ in range(info.world_size)]
    tdist.all_gather(parts, x.contiguous(), group=tdist.group.WORLD)
    return torch.cat(parts, dim=0)


def barrier(info: DistInfo) -> None:
    """Wait for every rank; gives up after the group's timeout (train.dist_timeout_s)."""
    if info.distributed:
        tdist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.distributed and tdist.is_initialized():
        tdist.destroy_process_group()
