"""The one place that picks a vector store: what the index manifest's `store` names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trafficsearch.errors import IndexError_
from trafficsearch.index.stores.base import VectorStore


def open_store(index_dir: str | Path, manifest: dict[str, Any] | None = None, **options: Any) -> VectorStore:
    """The store a committed index's manifest names (`store.backend`), the FAISS directory by default."""
    from trafficsearch.index.files import read_manifest

    index_dir = Path(index_dir)
    manifest = manifest if manifest is not None else read_manifest(index_dir)
    spec = dict(manifest.get("store") or {"backend": "faiss-dir"})
    backend = spec.get("backend")
    if backend == "faiss-dir":
        from trafficsearch.index.stores.faiss_dir import FaissDirStore

        return FaissDirStore(index_dir)
    if backend == "milvus":
        from trafficsearch.index.stores.milvus import MilvusStore

        return MilvusStore.from_spec(index_dir, spec, **options)
    raise IndexError_(
        f"unknown vector store backend {backend!r}; expected faiss-dir or milvus",
        path=index_dir / "manifest.json",
        field="store.backend",
    )
