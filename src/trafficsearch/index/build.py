"""Build, resume, extend and merge an index: the orchestration over plan, encoder, shards and files.

Ranks (RANK/WORLD_SIZE, as torchrun sets them) encode shards i % world == rank. The FAISS index is built by
`merge_index`: after a barrier on rank 0 when torch.distributed is initialised, otherwise by whichever rank
finds every shard finished (merges are serialised by a lock and idempotent), or by
`trafficsearch index merge`.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trafficsearch.errors import IndexError_, TrafficSearchError
from trafficsearch.index.encode import ShardCallback, encode_shards
from trafficsearch.index.faiss_util import DEFAULT_FACTORY, save_faiss
from trafficsearch.index.files import (
    MANIFEST,
    cleanup_stale,
    gen_file,
    locked,
    model_fingerprint,
    new_generation,
    read_manifest,
)
from trafficsearch.index.imagemeta import write_image_metadata
from trafficsearch.index.images import DEFAULT_MAX_PIXELS, expand_image_args, list_images
from trafficsearch.index.merge import merge_index
from trafficsearch.index.plan import DEFAULT_SHARD_SIZE, Entry, Plan, check_compatible, new_plan
from trafficsearch.index.shards import shard_done
from trafficsearch.ioutil import atomic_write_json, file_sha256
from trafficsearch.models.factory import load_model

__all__ = ["BuildResult", "add_images", "build_index", "commit_faiss", "merge_index"]


@dataclass
class BuildResult:
    index_dir: Path
    rank: int
    world_size: int
    encoded: int  # images encoded by this call
    shards_done_before: int  # shards of this rank that were already finished (resume)
    shards_encoded: int
    merged: bool
    manifest: dict[str, Any] | None


def _model_config(model: Any, model_spec: str | Path | None) -> dict[str, Any]:
    manifest = dict(model.manifest())
    spec = model_spec if model_spec is not None else manifest.get("spec", manifest.get("path", model.name))
    if Path(str(spec)).exists():  # a checkpoint folder: record it absolutely so any cwd can reload it
        spec = Path(str(spec)).resolve()
    return {
        "model_fingerprint": model_fingerprint(manifest),
        "model_name": model.name,
        "model_spec": str(spec),
        "model_manifest": manifest,
        "embed_dim": int(model.embed_dim),
    }


def rank_and_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise TrafficSearchError(
            f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world_size})", field="RANK"
        )
    return rank, world_size


def _kinds_from_labels(labels: Path | None) -> tuple[dict[str, str], str | None]:
    if labels is None:
        return {}, None
    from trafficsearch.data.labels import read_labels

    label_set = read_labels(labels, on_error="skip")
    return {r.image: r.kind for r in label_set.records}, file_sha256(Path(labels))[:16]


def build_index(
    gallery: str | Path,
    out: str | Path,
    model: Any,
    *,
    model_spec: str | Path | None = None,
    labels: str | Path | None = None,
    metadata: str | Path | None = None,
    factory: str = DEFAULT_FACTORY,
    batch_size: int = 64,
    workers: int = 2,
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    device: str = "cpu",
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    on_shard_done: ShardCallback | None = None,
) -> BuildResult:
    """Encode every image under `gallery` into `out` (resuming finished shards); merge when all are done.

    `metadata` (.csv/.jsonl: name, camera, time, any extra column) is validated against the gallery
    before anything is encoded; a later run with another file replaces it.
    """
    root = Path(gallery).resolve()
    if not root.is_dir():
        raise TrafficSearchError("gallery directory not found", path=gallery)
    index_dir = Path(out)
    index_dir.mkdir(parents=True, exist_ok=True)
    rank, world_size = rank_and_world(rank, world_size)
    kinds, labels_hash = _kinds_from_labels(Path(labels) if labels else None)
    config = {
        **_model_config(model, model_spec),
        "shard_size": int(shard_size),
        "gallery_root": str(root),
        "max_pixels": int(max_pixels),
        "labels": str(Path(labels).resolve()) if labels else None,
        "labels_sha256": labels_hash,
        "factory": factory,
    }
    images = list_images(root)
    plan = Plan.load(index_dir)
    if plan is None:
        if not images:
            raise TrafficSearchError("no images found (looked for .jpg/.png/... recursively)", path=root)
        entries = [
            Entry(
                p.relative_to(root).as_posix(), p.relative_to(root).as_posix(), kinds.get(p.name, "unknown")
            )
            for p in images
        ]
        plan = new_plan(config, entries)
        if rank == 0 or world_size == 1:
            plan.save(index_dir)
        else:  # another rank may be writing the same plan: same inputs give the same plan
            existing = Plan.load(index_dir)
            plan = existing or plan
            if existing is None:
                plan.save(index_dir)
    else:
        check_compatible(plan, config, index_dir)
        if plan.config.get("labels_sha256") != labels_hash:
            raise IndexError_(
                "this index was started with different --labels; use the same file to resume",
                path=index_dir / "plan.json",
                field="labels",
            )
        planned = {e.path for e in plan.entries}
        new = [p for p in images if p.relative_to(root).as_posix() not in planned]
        if new:
            raise IndexError_(
                f"{len(new)} images were added to the gallery since this index was started "
                f"(e.g. {new[0].name}); "
                "finish this build, then use `trafficsearch index add`",
                path=root,
            )
        if plan.config.get("factory") != factory:
            plan.config["factory"] = factory
            if rank == 0:
                plan.save(index_dir)
    if metadata is not None and rank == 0:
        write_image_metadata(index_dir, metadata, {e.name for e in plan.entries})
    fingerprint = plan.config["model_fingerprint"]
    mine = [i for i in range(len(plan.shards)) if i % world_size == rank]
    todo = [i for i in mine if not shard_done(index_dir, i, fingerprint)]
    encoded = encode_shards(
        plan,
        todo,
        index_dir,
        model,
        batch_size=batch_size,
        workers=workers,
        device=device,
        progress=progress,
        on_shard_done=on_shard_done,
    )
    manifest = _merge_when_ready(index_dir, plan, rank, world_size, factory, progress)
    return BuildResult(
        index_dir, rank, world_size, encoded, len(mine) - len(todo), len(todo), manifest is not None, manifest
    )


def _merge_when_ready(
    index_dir: Path, plan: Plan, rank: int, world_size: int, factory: str | None, progress: bool
) -> dict[str, Any] | None:
    try:
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized() and world_size > 1
    except ImportError:  # pragma: no cover
        distributed = False
    if distributed:
        dist.barrier()
        if rank != 0:
            return None
    fingerprint = plan.config["model_fingerprint"]
    if all(shard_done(index_dir, i, fingerprint) for i in range(len(plan.shards))):
        return merge_index(index_dir, factory=factory, progress=progress)
    return None


def add_images(
    index_dir: str | Path,
    images: Sequence[str | Path],
    model: Any | None = None,
    *,
    labels: str | Path | None = None,
    batch_size: int = 64,
    workers: int = 2,
    device: str = "cpu",
    progress: bool = True,
    on_shard_done: ShardCallback | None = None,
) -> BuildResult:
    """Append new images (files or folders) as new shards, encode only those, and extend the FAISS index."""
    index_dir = Path(index_dir)
    plan = Plan.load(index_dir)
    if plan is None:
        raise IndexError_("no build plan: build the index first", path=index_dir)
    if model is None:
        model = load_model(plan.config["model_spec"], device=device)
    config = {**plan.config, **_model_config(model, plan.config["model_spec"])}
    check_compatible(plan, config, index_dir)
    kinds, _ = _kinds_from_labels(Path(labels) if labels else None)
    old_kinds = {e.name: e.kind for e in plan.entries}
    root = plan.gallery_root
    planned = {e.path for e in plan.entries}
    fresh: list[Entry] = []
    for path in expand_image_args([Path(p) for p in images]):
        if not path.exists():
            raise TrafficSearchError("image not found", path=path)
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            rel = str(path)
        if rel not in planned:
            planned.add(rel)
            fresh.append(
                Entry(
                    rel,
                    rel if not Path(rel).is_absolute() else path.name,
                    kinds.get(path.name, old_kinds.get(path.name, "unknown")),
                )
            )
    with locked(index_dir):
        if fresh:
            plan.append(fresh)
            plan.save(index_dir)
    fingerprint = plan.config["model_fingerprint"]
    todo = [i for i in range(len(plan.shards)) if not shard_done(index_dir, i, fingerprint)]
    encoded = encode_shards(
        plan,
        todo,
        index_dir,
        model,
        batch_size=batch_size,
        workers=workers,
        device=device,
        progress=progress,
        on_shard_done=on_shard_done,
    )
    manifest = merge_index(index_dir, progress=progress)
    return BuildResult(index_dir, 0, 1, encoded, len(plan.shards) - len(todo), len(todo), True, manifest)


def commit_faiss(
    index_dir: Path, index: Any, faiss_info: dict[str, Any], tune: dict[str, Any] | None
) -> dict:
    """Replace only the FAISS index (same vectors/metadata) and commit a new manifest (used by tuning)."""
    with locked(index_dir):
        manifest = read_manifest(index_dir)
        if index.ntotal != manifest["count"]:
            raise IndexError_("the index changed while tuning; run tune again", path=index_dir)
        gen = new_generation()
        files = {**manifest["files"], "faiss": gen_file("faiss", gen)}
        save_faiss(index, index_dir / files["faiss"])
        manifest = {
            **manifest,
            "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "faiss": {**faiss_info, "metric": "inner_product", "ntotal": int(index.ntotal)},
            "tune": tune,
            "files": files,
        }
        atomic_write_json(index_dir / MANIFEST, manifest)
        cleanup_stale(index_dir, set(files.values()))
        return manifest
