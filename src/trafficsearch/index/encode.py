"""Gallery encoding: DataLoader workers decode + preprocess, the main process runs the model in batches
under inference_mode, and every finished shard is written at once so a kill loses at most one shard."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset

from trafficsearch.index.images import DEFAULT_MAX_PIXELS, SkipImage, load_rgb
from trafficsearch.index.plan import Plan
from trafficsearch.index.shards import Shard, write_shard
from trafficsearch.models.device import inference_precision

ShardCallback = Callable[[int], None]


class GalleryDataset(Dataset):
    """(pixels or None, id, width, height, skip reason) per planned image; never raises on a bad file."""

    def __init__(
        self,
        root: Path,
        items: Sequence[tuple[int, str]],
        transform: Callable[[Any], torch.Tensor],
        max_pixels: int,
        min_side: int | None = None,
    ) -> None:
        self.root = root
        self.items = list(items)
        self.transform = transform
        self.max_pixels = max_pixels
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, int, int, str]:
        image_id, rel = self.items[i]
        try:
            image, width, height = load_rgb(self.root / rel, self.max_pixels, self.min_side)
            pixels = self.transform(image)
        except SkipImage as exc:
            return None, image_id, 0, 0, str(exc)
        except Exception as exc:  # a preprocessing failure on one odd image must not stop the build
            return None, image_id, 0, 0, f"preprocessing failed: {type(exc).__name__}: {exc}"
        return pixels, image_id, width, height, ""


def collate(batch: list[tuple[torch.Tensor | None, int, int, int, str]]) -> dict[str, Any]:
    good = [b for b in batch if b[0] is not None]
    return {
        "pixels": torch.stack([b[0] for b in good]) if good else None,
        "ids": [b[1] for b in good],
        "sizes": [(b[2], b[3]) for b in good],
        "skipped": [(b[1], b[4]) for b in batch if b[0] is None],
    }


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode; the main process owns the math threads


class _ShardBuffer:
    def __init__(self, size: int) -> None:
        self.size = size
        self.vectors: list[np.ndarray] = []
        self.ids: list[int] = []
        self.sizes: list[tuple[int, int]] = []
        self.skipped: list[tuple[int, str]] = []

    @property
    def complete(self) -> bool:
        return len(self.ids) + len(self.skipped) == self.size

    def to_shard(self, dim: int) -> Shard:
        vectors = np.concatenate(self.vectors) if self.vectors else np.zeros((0, dim), np.float16)
        sizes = np.array(self.sizes, np.int32).reshape(-1, 2)
        return Shard(vectors, np.array(self.ids, np.int64), sizes, self.skipped)


class _ShardAssembler:
    """Collects batch results per shard and writes each shard, in order, the moment it is complete."""

    def __init__(
        self, plan: Plan, shards: Sequence[int], index_dir: Path, dim: int, on_done: ShardCallback | None
    ) -> None:
        self.index_dir = index_dir
        self.dim = dim
        self.on_done = on_done
        self.fingerprint = plan.config["model_fingerprint"]
        self.pending = list(shards)
        self.buffers: dict[int, _ShardBuffer] = {}
        self.shard_of: dict[int, int] = {}
        self.items: list[tuple[int, str]] = []
        for number in shards:
            start, end = plan.shards[number]
            self.buffers[number] = _ShardBuffer(end - start)
            for image_id in range(start, end):
                self.shard_of[image_id] = number
                self.items.append((image_id, plan.entries[image_id].path))

    def add(self, batch: dict[str, Any], vectors: np.ndarray | None) -> None:
        for row, (image_id, size) in enumerate(zip(batch["ids"], batch["sizes"], strict=True)):
            buffer = self.buffers[self.shard_of[image_id]]
            buffer.vectors.append(vectors[row : row + 1])
            buffer.ids.append(image_id)
            buffer.sizes.append(size)
        for image_id, reason in batch["skipped"]:
            self.buffers[self.shard_of[image_id]].skipped.append((image_id, reason))
        while self.pending and self.buffers[self.pending[0]].complete:
            number = self.pending.pop(0)
            write_shard(self.index_dir, number, self.buffers.pop(number).to_shard(self.dim), self.fingerprint)
            if self.on_done is not None:
                self.on_done(number)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def encode_shards(
    plan: Plan,
    shards: Sequence[int],
    index_dir: Path,
    model: Any,
    *,
    batch_size: int = 64,
    workers: int = 2,
    device: str = "cpu",
    progress: bool = True,
    on_shard_done: ShardCallback | None = None,
) -> int:
    """Encode the given shards of `plan` and write each as soon as it is complete; returns images encoded."""
    if not shards:
        return 0
    assembler = _ShardAssembler(plan, shards, index_dir, int(model.embed_dim), on_shard_done)
    dataset = GalleryDataset(
        plan.gallery_root,
        assembler.items,
        model.image_transform(),
        int(plan.config.get("max_pixels", DEFAULT_MAX_PIXELS)),
        min_side=2 * int(model.image_size),
    )
    workers = max(0, min(int(workers), _cores()))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
    )
    # Decoding workers and the model share the cores: more math threads than free cores only spin (OpenMP
    # busy-waits); on 2 cores one math thread beside the workers measured 2x less CPU than two.
    threads = torch.get_num_threads()
    if workers and device == "cpu":
        torch.set_num_threads(max(1, min(threads, _cores() - workers)))
    encoded = 0
    columns = (TextColumn("encoding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with (
            Progress(*columns, disable=not progress, transient=False) as bar,
            torch.inference_mode(),
            inference_precision(device),  # bf16/fp16 autocast + TF32 on a GPU, fp32 on CPU
        ):
            task = bar.add_task("encode", total=len(assembler.items))
            for batch in loader:
                vectors = None
                if batch["pixels"] is not None:
                    out = model.encode_images(batch["pixels"].to(device))
                    vectors = out.float().cpu().numpy().astype(np.float16)
                    encoded += len(batch["ids"])
                assembler.add(batch, vectors)
                bar.advance(task, len(batch["ids"]) + len(batch["skipped"]))
    finally:
        torch.set_num_threads(threads)
    return encoded
