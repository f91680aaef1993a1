"""The single-index first stage: FAISS top-`depth` of the (cached) query vectors over the allowed rows.

This is the one place FAISS is searched: the engine's plain index and every ensemble member's top-N
(search/ensemble/members.py) go through `FaissFirstStage`. A filter arrives as an array of allowed rows and is
turned into an id selector, so a kind/metadata filter never loses hits to over-fetching; index types that
take no selector (fast-scan PQ) fall back to an exact search over the allowed rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np

from trafficsearch.index import exact, faiss_util
from trafficsearch.search.cache import TextCache
from trafficsearch.search.stages import Candidates

_QUERY_CHUNK = 1024
_SELECTORS_KEPT = 16


class FaissFirstStage:
    """Top-`depth` rows of one index per text; `cache` supplies the query vectors (float32)."""

    def __init__(self, data: Any, cache: TextCache) -> None:
        self.data = data
        self.cache = cache
        self.params = dict(data.manifest.get("faiss", {}).get("params") or {})
        # id(rows) -> (rows, selector): rows are kept alive with their selector, so the id stays theirs
        self._selectors: dict[int, tuple[np.ndarray, faiss.IDSelector]] = {}

    def _selector(self, rows: np.ndarray | None) -> faiss.IDSelector | None:
        if rows is None:
            return None
        entry = self._selectors.get(id(rows))
        if entry is None or entry[0] is not rows:
            if len(self._selectors) >= _SELECTORS_KEPT:
                self._selectors.clear()
            entry = (rows, faiss.IDSelectorBatch(rows))
            self._selectors[id(rows)] = entry
        return entry[1]

    def search(
        self,
        texts: Sequence[str],
        depth: int,
        rows: np.ndarray | None,
        kinds: Sequence[str | None] | None = None,
    ) -> list[Candidates]:
        """Candidates per text, best first; `rows` (None: all) are the allowed index rows."""
        selector = self._selector(rows)
        out: list[Candidates] = []
        for start in range(0, len(texts), _QUERY_CHUNK):
            chunk = list(texts[start : start + _QUERY_CHUNK])
            vectors = self.cache.get(chunk)
            try:
                scores, found = self._search(vectors, depth, rows, selector)
            except RuntimeError:  # some index types (fast-scan PQ) take no selector: exact over the subset
                if rows is None:
                    raise
                scores, found = self._subset_search(rows, vectors, depth)
            for s, r in zip(scores, found, strict=True):
                keep = r >= 0
                out.append(Candidates(r[keep].astype(np.int64), s[keep].astype(np.float32)))
        return out

    # -- exact path (m2-fast, issue 13 item 4): a plain Flat index is scanned by index/exact.py ------------
    def _search(
        self, vectors: np.ndarray, depth: int, rows: np.ndarray | None, selector: faiss.IDSelector | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if exact.is_exact(self.data.faiss):
            return exact.search_exact(self.data.faiss, self.data.vectors, vectors, depth, rows)
        return faiss_util.search(self.data.faiss, vectors, depth, self.params, selector)

    def _subset_search(
        self, allowed: np.ndarray, queries: np.ndarray, depth: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-`depth` among the allowed rows (for indexes without selector support)."""
        scores = queries @ np.asarray(self.data.vectors[allowed], dtype=np.float32).T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
        return np.take_along_axis(scores, top, axis=1), allowed[top]
