"""Merge finished shards into a committed index with bounded memory.

Shards stream one at a time into a memory-mapped vectors file (float32 under the exact Flat index, fp16
otherwise: `vectors_dtype_for`) and a SQLite database; the FAISS index is built from that file in float32
chunks (trainable types on a seeded sample) and written to disk with faiss.write_index; the default exact
'Flat' index is written straight from the file, never held in RAM.
Peak memory is one shard plus one chunk plus the plan (and, for non-flat types, the index itself).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress
from safetensors import safe_open

from trafficsearch.errors import IndexError_
from trafficsearch.index import faiss_util
from trafficsearch.index.files import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SKIPPED,
    cleanup_stale,
    gen_file,
    locked,
    new_generation,
    read_manifest,
    shard_path,
)
from trafficsearch.index.imagemeta import IMAGE_META
from trafficsearch.index.metadata import ImageRow, write_metadata
from trafficsearch.index.plan import Plan
from trafficsearch.index.shards import read_shard, shard_done
from trafficsearch.ioutil import atomic_open, atomic_write_json

DELETED = "deleted.json"
_COMPARE_CHUNK = 262_144


def read_deleted(index_dir: Path) -> set[int]:
    path = index_dir / DELETED
    if not path.is_file():
        return set()
    try:
        return {int(i) for i in json.loads(path.read_text(encoding="utf-8"))}
    except (OSError, ValueError, TypeError) as exc:
        raise IndexError_(f"deleted-ids file is unreadable: {exc}", path=path) from None


def _shard_ids(index_dir: Path, number: int) -> np.ndarray:
    with safe_open(str(shard_path(index_dir, number)), framework="numpy") as handle:
        return handle.get_tensor("ids")


def _same_prefix(old: np.ndarray, new: np.ndarray) -> bool:
    """Whether `old` equals the first rows of `new`, compared chunk by chunk (both may be memory-mapped)."""
    if len(old) > len(new) or old.shape[1:] != new.shape[1:]:
        return False
    return all(
        np.array_equal(old[s : s + _COMPARE_CHUNK], new[s : s + _COMPARE_CHUNK])
        for s in range(0, len(old), _COMPARE_CHUNK)
    )


def vectors_dtype_for(factory: str) -> type[np.floating]:
    """The merged vectors file's dtype: float32 under an exact Flat index, fp16 (the shards' own) otherwise.

    Why float32 for Flat: the engine's exact scan (index/exact.py) runs one sgemm per block straight over an
    aligned float32 memory map. FAISS's own file puts its codes at byte 45, which is not aligned, so every
    block used to be copied first. At 10M x 256 a one-query scan over the copied blocks ran 0.96x numpy
    over the same mapping (455 ms), over this file 1.46x (299 ms; benchmarks/results/
    search_latency_index-10000000.md). The values are the shards' fp16 ones, upcast
    exactly; the cost is disk (d x 4 bytes per row instead of d x 2). Trainable indexes keep fp16: their
    search reads FAISS's codes, and the vectors only feed training, re-ranking and filtered fallbacks.
    """
    return np.float32 if faiss_util.is_flat(factory) else np.float16


def record_deleted(index_dir: Path, ids: Iterable[int]) -> set[int]:
    """Add ids to the directory's deleted list (merges and store ingests leave them out); the new set."""
    deleted = read_deleted(index_dir) | {int(i) for i in ids}
    atomic_write_json(index_dir / DELETED, sorted(deleted), indent=None)
    return deleted


def merge_index(
    index_dir: str | Path,
    factory: str | None = None,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Gather all finished shards into vectors + metadata + FAISS index, commit a new manifest, return it.

    When the previous index is a prefix of the new rows (an `add`), its FAISS index is extended instead of
    rebuilt; when rows were deleted, a trained index is emptied and refilled (same centroids and settings).
    """
    index_dir = Path(index_dir)
    with locked(index_dir):
        plan = Plan.load(index_dir)
        if plan is None:
            raise IndexError_("no build plan: nothing to merge", path=index_dir)
        fingerprint = plan.config["model_fingerprint"]
        n_shards = len(plan.shards)
        missing = [i for i in range(n_shards) if not shard_done(index_dir, i, fingerprint)]
        if missing:
            raise IndexError_(
                f"{len(missing)} of {n_shards} shards are not encoded yet (first: {missing[:5]}); "
                "finish the build on every rank, then merge",
                path=index_dir,
            )
        dim = int(plan.config["embed_dim"])
        deleted = read_deleted(index_dir)
        deleted_ids = np.array(sorted(deleted), dtype=np.int64)
        total = 0
        for i in range(n_shards):
            ids = _shard_ids(index_dir, i)
            total += int(len(ids) - np.isin(ids, deleted_ids).sum()) if len(deleted_ids) else len(ids)
        if not total:
            raise IndexError_("no image could be encoded (see skipped.jsonl)", path=index_dir)
        gen = new_generation()
        files = {kind: gen_file(kind, gen) for kind in ("vectors", "metadata", "faiss")}
        kinds: collections.Counter[str] = collections.Counter()
        skipped: list[tuple[int, str]] = []
        prev = _previous_manifest(index_dir)
        prev_faiss = (prev or {}).get("faiss", {})
        factory = (
            factory or prev_faiss.get("factory") or plan.config.get("factory") or faiss_util.DEFAULT_FACTORY
        )
        vectors_dtype = vectors_dtype_for(factory)
        vec_tmp = index_dir / f".{files['vectors']}.tmp"
        out = np.lib.format.open_memmap(vec_tmp, mode="w+", dtype=vectors_dtype, shape=(total, dim))
        bar = Progress(disable=not progress, transient=True)
        with bar:
            task = bar.add_task("merging shards", total=n_shards)

            def advance(number: int) -> None:
                bar.advance(task)
                if on_shard is not None:
                    on_shard(number)

            rows = _stream_rows(index_dir, plan, out, deleted_ids, kinds, skipped, dim, advance)
            image_meta = index_dir / IMAGE_META
            write_metadata(index_dir / files["metadata"], rows, image_meta if image_meta.is_file() else None)
        out.flush()
        del out
        with open(vec_tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(vec_tmp, index_dir / files["vectors"])
        vectors = np.load(index_dir / files["vectors"], mmap_mode="r")
        params = _write_faiss(index_dir, files["faiss"], vectors, factory, prev, progress)
        with atomic_open(index_dir / SKIPPED, "w") as handle:
            for image_id, reason in sorted(skipped):
                record = {"id": image_id, "path": plan.entries[image_id].path, "reason": reason}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        manifest = _manifest(plan, prev, total, dim, len(skipped), kinds, factory, params, files)
        manifest["n_deleted"] = len(deleted)
        atomic_write_json(index_dir / MANIFEST, manifest)
        cleanup_stale(index_dir, set(files.values()))
        return manifest


def _stream_rows(
    index_dir: Path,
    plan: Plan,
    out: np.ndarray,
    deleted_ids: np.ndarray,
    kinds: collections.Counter[str],
    skipped: list[tuple[int, str]],
    dim: int,
    advance: Any,
) -> Iterator[ImageRow]:
    """Copy each shard's vectors into `out` and yield its metadata rows (one shard in memory at a time)."""
    row = 0
    for number in range(len(plan.shards)):
        shard = read_shard(index_dir, number)
        if shard.vectors.shape[1:] != (dim,) and len(shard.vectors):
            raise IndexError_(
                f"shard {number} vectors have dim {shard.vectors.shape[1]}, the model says {dim}",
                path=shard_path(index_dir, number),
            )
        skipped.extend(shard.skipped)
        keep = ~np.isin(shard.ids, deleted_ids) if len(deleted_ids) else np.ones(len(shard.ids), bool)
        vectors, ids, sizes = shard.vectors[keep], shard.ids[keep], shard.sizes[keep]
        out[row : row + len(ids)] = vectors
        for image_id, (width, height) in zip(ids.tolist(), sizes.tolist(), strict=True):
            entry = plan.entries[image_id]
            kinds[entry.kind] += 1
            yield ImageRow(image_id, row, entry.name, entry.path, entry.kind, int(width), int(height))
            row += 1
        advance(number)


def _previous_manifest(index_dir: Path) -> dict[str, Any] | None:
    with contextlib.suppress(IndexError_):
        manifest = read_manifest(index_dir)
        if (index_dir / str(manifest.get("files", {}).get("faiss"))).is_file():
            return manifest
    return None


def _write_faiss(
    index_dir: Path,
    name: str,
    vectors: np.ndarray,
    factory: str,
    prev: dict[str, Any] | None,
    progress: bool,
) -> dict[str, Any]:
    """Write the FAISS index for `vectors`; the search params that stay valid (tuned ones when reused)."""
    path = index_dir / name
    if faiss_util.is_flat(factory):
        faiss_util.write_flat(path, vectors)
        return {}
    prev_faiss = (prev or {}).get("faiss", {})
    if prev is not None and prev_faiss.get("factory") == factory:
        old = faiss_util.load_faiss(index_dir / prev["files"]["faiss"])
        prev_vectors = np.load(index_dir / prev["files"]["vectors"], mmap_mode="r")
        if old.ntotal == len(prev_vectors) and _same_prefix(prev_vectors, vectors):
            faiss_util.add_vectors(old, vectors[len(prev_vectors) :])
        else:  # rows deleted or changed: keep the trained structure, refill
            old.reset()
            faiss_util.add_vectors(old, vectors)
        faiss_util.save_faiss(old, path)
        return dict(prev_faiss.get("params") or {})
    index = faiss_util.new_faiss(vectors, factory)
    faiss_util.add_vectors(index, vectors)
    faiss_util.save_faiss(index, path)
    return {}


def _manifest(
    plan: Plan,
    prev: dict[str, Any] | None,
    count: int,
    dim: int,
    n_skipped: int,
    kinds: Iterable[tuple[str, int]] | collections.Counter[str],
    factory: str,
    params: dict[str, Any],
    files: dict[str, str],
) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    model_manifest = plan.config["model_manifest"]
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": (prev or {}).get("created", now),
        "updated": now,
        "count": int(count),
        "dim": dim,
        "vectors_dtype": np.dtype(vectors_dtype_for(factory)).name,
        "n_planned": len(plan.entries),
        "n_skipped": n_skipped,
        "model_name": plan.config["model_name"],
        "model_spec": plan.config["model_spec"],
        "model_fingerprint": plan.config["model_fingerprint"],
        "model": model_manifest,
        "preprocessing": model_manifest.get(
            "preprocessing", {"image_size": model_manifest.get("image_size")}
        ),
        "decode": {
            "max_pixels": plan.config.get("max_pixels"),
            "jpeg_draft_min_side": 2 * int(model_manifest.get("image_size") or 0) or None,
            "alpha_background": "white",
        },
        "gallery_root": plan.config["gallery_root"],
        "labels": plan.config.get("labels"),
        "kinds": {k: int(v) for k, v in sorted(dict(kinds).items())},
        "faiss": {"factory": factory, "metric": "inner_product", "params": params, "ntotal": int(count)},
        "tune": (prev or {}).get("tune") if params else None,
        "build": {"shard_size": plan.config["shard_size"], "shards": len(plan.shards)},
        "files": files,
    }
    if prev and prev.get("store"):  # a vector store this index was pushed to stays named (push re-syncs it)
        manifest["store"] = prev["store"]
    return manifest
