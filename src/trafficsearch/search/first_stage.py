"""The single-index first stage: the vector store's top-`depth` of the (cached) query vectors.

Every first-stage search of one index goes through `StoreFirstStage`: the engine's plain index and every
ensemble member's top-N (search/ensemble/members.py). The store is the index directory's FAISS index
(index/stores/faiss_dir.py, the one place FAISS is searched) unless the manifest names another one (a Milvus
collection, index/stores/milvus.py). The FAISS directory takes the allowed rows the engine computed (an id
selector, so a filter never loses hits to over-fetching); a store that filters itself gets the conditions
(`where`, kind included) and answers in image ids, mapped back to this index's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trafficsearch.errors import IndexError_
from trafficsearch.index.stores.base import VectorStore
from trafficsearch.index.stores.faiss_dir import FaissDirStore
from trafficsearch.search.cache import TextCache
from trafficsearch.search.stages import Candidates

_QUERY_CHUNK = 1024


class StoreFirstStage:
    """Top-`depth` rows of one index per text; `cache` supplies the query vectors (float32), `store` (default:
    the index directory's FAISS index) the top-k."""

    def __init__(self, data: Any, cache: TextCache, store: VectorStore | None = None) -> None:
        self.data = data
        self.cache = cache
        self.store: VectorStore = store if store is not None else FaissDirStore(data.dir, data)

    def search(
        self,
        texts: Sequence[str],
        depth: int,
        rows: np.ndarray | None,
        kinds: Sequence[str | None] | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[Candidates]:
        """Candidates per text, best first; `rows` (None: all) are the allowed index rows, `where` the
        conditions they came from (kind included; what a store that filters itself needs)."""
        if rows is not None and not where and not isinstance(self.store, FaissDirStore):
            raise IndexError_(
                f"the {self.store.backend} store filters by conditions, not by rows; pass `where`",
                path=self.data.dir,
                field="store",
            )
        out: list[Candidates] = []
        for start in range(0, len(texts), _QUERY_CHUNK):
            chunk = list(texts[start : start + _QUERY_CHUNK])
            scores, found = self._search(self.cache.get(chunk), depth, rows, where)
            for s, r in zip(scores, found, strict=True):
                keep = r >= 0
                out.append(Candidates(r[keep].astype(np.int64), s[keep].astype(np.float32)))
        return out

    def _search(
        self, vectors: np.ndarray, depth: int, rows: np.ndarray | None, where: dict[str, Any] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows, -1 padded); stores other than the FAISS directory answer in image ids."""
        if isinstance(self.store, FaissDirStore):
            return self.store.search_rows(vectors, depth, rows=rows)
        scores, ids = self.store.search(vectors, depth, (where or None) if rows is not None else None)
        return scores, self.data.metadata.rows_of_ids(ids)
