"""Point an index at a vector store and keep both in step: push (resumable), detach, delete images."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trafficsearch.errors import TrafficSearchError
from trafficsearch.index.files import MANIFEST, locked, read_manifest
from trafficsearch.index.store import open_index
from trafficsearch.index.stores.factory import open_store
from trafficsearch.index.stores.faiss_dir import FaissDirStore
from trafficsearch.ioutil import atomic_write_json


def _set_store(index_dir: Path, spec: dict[str, Any] | None) -> dict[str, Any]:
    with locked(index_dir):
        manifest = read_manifest(index_dir)
        if spec is None:
            manifest.pop("store", None)
        else:
            manifest["store"] = spec
        atomic_write_json(index_dir / MANIFEST, manifest)
        return manifest


def push_to_milvus(
    index_dir: str | Path,
    uri: str,
    *,
    token: str | None = None,
    collection: str | None = None,
    partition_by: str = "day",
    index_type: str = "FLAT",
    index_params: dict[str, Any] | None = None,
    queries: np.ndarray | None = None,
    k: int = 10,
    target: float = 0.95,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Upsert the committed index into a Milvus collection (resuming a killed push), optionally tune its
    index type on query embeddings, and record the store in the manifest so searches use it."""
    from trafficsearch.index.stores.milvus import MilvusStore

    index_dir = Path(index_dir)
    data = open_index(index_dir)  # the local index must be complete and consistent
    store = MilvusStore(
        index_dir,
        uri,
        collection,
        token=token,
        partition_by=partition_by,
        index_type=index_type,
        index_params=index_params,
    )
    store.ingest(progress=progress)
    if store.count() != data.count:
        raise TrafficSearchError(
            f"Milvus collection {store.collection!r} holds {store.count()} images, the index {data.count}; "
            "another index writes to this collection: use another --collection",
            field="collection",
        )
    if queries is not None and len(queries):
        from trafficsearch.index.stores.milvus_tune import tune_milvus

        tune_milvus(store, data.vectors, data.metadata.ids, queries, k=k, target=target, log=log)
    return _set_store(index_dir, store.describe())


def sync_store(index_dir: str | Path, progress: bool = False) -> int | None:
    """After a merge (add, new metadata, delete): bring the store the manifest names up to date.

    Returns the shards written, or None when the index searches its own FAISS index."""
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    if not manifest.get("store"):
        return None
    return open_store(index_dir, manifest).ingest(progress=progress)


def detach_store(index_dir: str | Path) -> dict[str, Any]:
    """Search the local FAISS index again (the collection is left as it is)."""
    return _set_store(Path(index_dir), None)


def delete_images(index_dir: str | Path, ids: Sequence[int]) -> dict[str, Any]:
    """Delete images by id from the local index (re-merged) and from the store the manifest names."""
    index_dir = Path(index_dir)
    data = open_index(index_dir)
    wanted = np.asarray(sorted({int(i) for i in ids}), dtype=np.int64)
    missing = wanted[data.metadata.rows_of_ids(wanted) < 0]
    if len(missing):
        raise TrafficSearchError(
            f"no image with id {int(missing[0])} in this index", path=index_dir, field="id"
        )
    manifest = data.manifest
    if manifest.get("store"):
        open_store(index_dir, manifest).delete(wanted)
    FaissDirStore(index_dir, data).delete(wanted)
    return read_manifest(index_dir)
