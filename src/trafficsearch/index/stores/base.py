"""The vector-store seam: what the search engine's first stage and the ingest commands need from a
backend. Stores speak image ids (stable across backends); the engine maps ids to its rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

Where = dict[str, Any]
ShardHook = Callable[[int], None]


@runtime_checkable
class VectorStore(Protocol):
    """Top-k inner-product search with metadata filters, fed from an index directory's shards."""

    backend: str

    def count(self) -> int:
        """Vectors the store holds now."""
        ...

    def search(
        self, queries: np.ndarray, k: int, where: Where | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores [q, k] float32, image ids [q, k] int64, -1 padded) of the best k per query among the
        images matching `where` (the Metadata.rows_where format)."""
        ...

    def ingest(self, progress: bool = False, on_shard: ShardHook | None = None) -> int:
        """Bring the store up to date with the index directory's finished shards; shards written.

        Resumable: after a kill, calling it again finishes the job with nothing lost or duplicated.
        """
        ...

    def delete(self, ids: np.ndarray) -> None:
        """Remove images by id (and keep them out of later ingests)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this store (backend, where it lives, index type, recall)."""
        ...
