"""The embedded default store: the index directory itself (memory-mapped FAISS index + SQLite metadata).

Filters become a FAISS id selector over the rows SQLite returns, so a filtered top-k never loses hits to
over-fetching; index types without selector support (fast-scan PQ) fall back to exact search over them.
A plain Flat index is scanned by index/exact.py's blocked BLAS kernel instead of FAISS's own search.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from trafficsearch.index import exact, faiss_util
from trafficsearch.index.merge import merge_index, record_deleted
from trafficsearch.index.store import IndexData, open_index
from trafficsearch.index.stores.base import ShardHook, Where

_SELECTORS = 64  # filters remembered (each keeps its row array alive for the selector)


class FaissDirStore:
    backend = "faiss-dir"

    def __init__(self, index_dir: str | Path, data: IndexData | None = None) -> None:
        self.index_dir = Path(index_dir)
        self._data = data
        self._rows: dict[str, np.ndarray | None] = {}  # filter (JSON) -> allowed rows (None: all)
        self._selectors: dict[int, tuple[np.ndarray, faiss.IDSelector]] = {}  # id(rows) -> selector

    @property
    def data(self) -> IndexData:
        if self._data is None:
            self._data = open_index(self.index_dir)
        return self._data

    def _reopen(self) -> None:
        self._data, self._rows, self._selectors = None, {}, {}

    def count(self) -> int:
        return self.data.count

    def rows_for(self, where: Where | None) -> np.ndarray | None:
        """Allowed rows of a filter (the same array per filter); None when every row is allowed."""
        if not where:
            return None
        key = json.dumps(where, sort_keys=True, default=str)
        if key not in self._rows:
            if len(self._rows) >= _SELECTORS:
                self._rows.clear()
            rows = self.data.metadata.rows_where(where)
            self._rows[key] = None if len(rows) == self.data.count else rows
        return self._rows[key]

    def _selector(self, rows: np.ndarray) -> faiss.IDSelector:
        """The id selector of an allowed-rows array, kept per array (callers hand back the same one)."""
        entry = self._selectors.get(id(rows))
        if entry is None or entry[0] is not rows:
            if len(self._selectors) >= _SELECTORS:
                self._selectors.clear()
            entry = (rows, faiss.IDSelectorBatch(rows))  # rows kept alive, so the id stays theirs
            self._selectors[id(rows)] = entry
        return entry[1]

    def search_rows(
        self, queries: np.ndarray, k: int, where: Where | None = None, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) like `search`, in this directory's row numbers (what the engine works in).

        `rows`: the allowed rows when the caller has them (the engine's filter), else taken from `where`.
        This is the one place FAISS is searched (search/first_stage.py goes through here).
        """
        data = self.data
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        allowed = rows if rows is not None else self.rows_for(where)
        if allowed is not None and not len(allowed):
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        selector = None if allowed is None else self._selector(allowed)
        params = dict(data.manifest.get("faiss", {}).get("params") or {})
        try:
            if exact.is_exact(data.faiss):  # a plain Flat index: the blocked BLAS scan (index/exact.py)
                scores, found = exact.search_exact(data.faiss, data.vectors, queries, k, allowed)
            else:
                scores, found = faiss_util.search(data.faiss, queries, k, params, selector)
        except RuntimeError:  # fast-scan PQ takes no selector: exact over the allowed subset
            if allowed is None:
                raise
            sub = queries @ np.asarray(data.vectors[allowed], dtype=np.float32).T
            top = np.argsort(-sub, axis=1, kind="stable")[:, : min(k, len(allowed))]
            scores, found = np.take_along_axis(sub, top, axis=1), allowed[top]
        return _pad(scores, found, k)

    def search(
        self, queries: np.ndarray, k: int, where: Where | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self.search_rows(queries, k, where)
        ids = np.where(rows >= 0, self.data.metadata.ids[rows.clip(0)], -1)
        return scores, ids

    def ingest(self, progress: bool = False, on_shard: ShardHook | None = None) -> int:
        """Merge the finished shards into a new committed generation (atomic: a kill keeps the old one)."""
        manifest = merge_index(self.index_dir, progress=progress, on_shard=on_shard)
        self._reopen()
        return int(manifest["build"]["shards"])

    def delete(self, ids: np.ndarray) -> None:
        record_deleted(self.index_dir, np.asarray(ids).tolist())
        merge_index(self.index_dir, progress=False)
        self._reopen()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "faiss": self.data.manifest.get("faiss")}


def _pad(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exactly k columns, row -1 and score -inf where fewer than k images qualify."""
    q, have = rows.shape
    out_s = np.full((q, k), -np.inf, np.float32)
    out_r = np.full((q, k), -1, np.int64)
    out_s[:, : min(k, have)] = scores[:, :k]
    out_r[:, : min(k, have)] = rows[:, :k]
    out_s[out_r < 0] = -np.inf
    return out_s, out_r
