"""One finished shard = one safetensors file (fp16 vectors, ids, original sizes, skipped list), written
atomically: it exists completely or not at all, which is what makes resuming exact."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save

from trafficsearch.index.files import shard_path
from trafficsearch.ioutil import atomic_write_bytes


@dataclass
class Shard:
    vectors: np.ndarray  # [n, D] float16, rows in ascending id order
    ids: np.ndarray  # [n] int64
    sizes: np.ndarray  # [n, 2] int32 original width, height
    skipped: list[tuple[int, str]]  # (id, reason)


def write_shard(index_dir: Path, number: int, shard: Shard, fingerprint: str) -> None:
    order = np.argsort(shard.ids, kind="stable")
    tensors = {
        "vectors": np.ascontiguousarray(shard.vectors[order], dtype=np.float16),
        "ids": np.ascontiguousarray(shard.ids[order], dtype=np.int64),
        "sizes": np.ascontiguousarray(shard.sizes[order], dtype=np.int32),
    }
    metadata = {
        "shard": str(number),
        "model_fingerprint": fingerprint,
        "skipped": json.dumps(sorted(shard.skipped)),
    }
    atomic_write_bytes(shard_path(index_dir, number), save(tensors, metadata=metadata))


def shard_done(index_dir: Path, number: int, fingerprint: str) -> bool:
    """A shard counts as done when its file exists, parses, and was made by the same model."""
    path = shard_path(index_dir, number)
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return False
    return meta.get("model_fingerprint") == fingerprint


def read_shard(index_dir: Path, number: int) -> Shard:
    path = shard_path(index_dir, number)
    tensors = load_file(str(path))
    with safe_open(str(path), framework="numpy") as handle:
        meta = handle.metadata() or {}
    skipped = [(int(i), str(r)) for i, r in json.loads(meta.get("skipped", "[]"))]
    return Shard(tensors["vectors"], tensors["ids"], tensors["sizes"], skipped)
