"""Index directories from given vectors, without a model or images: the same plan + shards an
`index build` writes, so merge, stores and benchmarks run on the real code path at any size."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from trafficsearch.index.files import locked, model_fingerprint
from trafficsearch.index.plan import Entry, Plan, new_plan
from trafficsearch.index.shards import Shard, write_shard

VectorSource = Callable[[int, int], np.ndarray]  # (start, stop) -> [stop - start, dim] vectors


def synthetic_model_manifest(dim: int, name: str = "synthetic") -> dict:
    return {"name": name, "embed_dim": dim, "checkpoint_sha256": f"{name}-{dim}", "image_size": 0}


def start_synthetic(index_dir: Path, dim: int, shard_size: int, name: str = "synthetic") -> Plan:
    """An empty plan for a model-less index (gallery root = the directory itself)."""
    manifest = synthetic_model_manifest(dim, name)
    config = {
        "model_fingerprint": model_fingerprint(manifest),
        "model_name": name,
        "model_spec": name,
        "model_manifest": manifest,
        "embed_dim": dim,
        "shard_size": int(shard_size),
        "gallery_root": str(Path(index_dir).resolve()),
        "max_pixels": 0,
        "labels": None,
        "labels_sha256": None,
        "factory": "Flat",
    }
    index_dir.mkdir(parents=True, exist_ok=True)
    plan = new_plan(config, [])
    plan.save(index_dir)
    return plan


def append_synthetic(
    index_dir: Path, source: VectorSource, count: int, kinds: Sequence[str] | None = None, prefix: str = "img"
) -> list[int]:
    """Plan `count` more images named {prefix}{id:08d}.jpg and write their shards; the new shard numbers."""
    with locked(index_dir):
        plan = Plan.load(index_dir)
        assert plan is not None, "start_synthetic first"
        start = len(plan.entries)
        entries = [
            Entry(f"{prefix}{i:08d}.jpg", f"{prefix}{i:08d}.jpg", kinds[i - start] if kinds else "unknown")
            for i in range(start, start + count)
        ]
        new = plan.append(entries)
        plan.save(index_dir)
    fingerprint = plan.config["model_fingerprint"]
    for number in new:
        lo, hi = plan.shards[number]
        vectors = np.asarray(source(lo - start, hi - start), dtype=np.float16)
        ids = np.arange(lo, hi, dtype=np.int64)
        sizes = np.full((hi - lo, 2), 64, dtype=np.int32)
        write_shard(index_dir, number, Shard(vectors, ids, sizes, []), fingerprint)
    return new


def unit_vectors(seed: int, dim: int) -> VectorSource:
    """Random unit vectors, deterministic per (seed, start): chunks can be generated in any order."""

    def source(start: int, stop: int) -> np.ndarray:
        rng = np.random.default_rng([seed, start])
        x = rng.standard_normal((stop - start, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return source
