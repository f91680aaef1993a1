"""Ensemble members: row scorers over the ensemble's reference gallery, and opening them from a config.

Members are row scorers (`Member`): an embedding index (`EmbeddingMember`) or anything that returns a score
row per query over the gallery (e.g. a stub, a caption matcher). The attribute baseline is an embedding
member (its image vector holds log-probabilities, its text vector selects the stated ones).
All members must index the same images (any order; rows are aligned by gallery path).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trafficsearch.errors import IndexError_
from trafficsearch.index.files import check_fingerprint
from trafficsearch.index.store import open_index
from trafficsearch.index.stores.base import VectorStore
from trafficsearch.index.stores.factory import open_store
from trafficsearch.models.factory import load_model
from trafficsearch.search import fusion
from trafficsearch.search.cache import TextCache, encode_queries
from trafficsearch.search.ensemble.config import ENSEMBLE_FILE, EnsembleConfig, member_index_dir
from trafficsearch.search.first_stage import StoreFirstStage

_BLOCK = 32_768  # gallery rows per matmul block
_FLOAT32_COPY_MAX = 32_000_000  # vector elements (128 MB in float32) a member keeps a float32 copy of


class Member:
    """A row scorer: scores(texts, rows) -> [Q, len(rows)] over the reference gallery rows (all when None)."""

    name: str = "member"

    def bind(self, reference: Any) -> None:
        """Called once with the ensemble's reference IndexData (row order of every score row)."""

    def scores(self, texts: Sequence[str], rows: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def top(
        self, texts: Sequence[str], n: int, rows: np.ndarray | None, where: dict[str, Any] | None = None
    ) -> list[np.ndarray]:
        """Reference rows of each query's top n (default: from the full row); `where`: the conditions
        `rows` came from, for members whose store filters itself."""
        scores = self.scores(texts, rows)
        n = min(n, scores.shape[1])
        part = np.argpartition(-scores, n - 1, axis=1)[:, :n] if n else np.zeros((len(texts), 0), int)
        return [part[i] if rows is None else rows[part[i]] for i in range(len(texts))]

    def stats(self, texts: Sequence[str], rows: np.ndarray | None) -> fusion.RowStats | None:
        """Exact l2/zscore statistics of the full rows, when cheaper than scoring them (else None)."""
        return None

    def scores_at(self, texts: Sequence[str], rows_per_query: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Scores of each query on its own candidate rows (default: from the full row)."""
        full = self.scores(texts, None)
        return [full[i, r] for i, r in enumerate(rows_per_query)]


class EmbeddingMember(Member):
    """A model's index: text vectors (cached) dot the image vectors, aligned to the reference row order."""

    def __init__(
        self,
        name: str,
        data: Any,
        model: Any,
        cache: TextCache | None = None,
        cache_size: int = 100_000,
        store: VectorStore | None = None,
    ) -> None:
        """`cache`: the query-vector cache of `model` (shared with other engines over the same model);
        `store`: the member index's vector store (default: its FAISS directory)."""
        self.name, self.data, self.model = name, data, model
        self.cache = cache if cache is not None else TextCache(self._encode, capacity=cache_size)
        self._first = StoreFirstStage(data, self.cache, store)
        self._inverse: np.ndarray | None = None
        self._own_rows: tuple[np.ndarray, np.ndarray] | None = None
        self._vectors: np.ndarray | None = None
        self._vectors32: np.ndarray | None = None
        self._perm: np.ndarray | None = None
        self._gram: dict[bytes, tuple[np.ndarray, np.ndarray, int]] = {}

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        return encode_queries(self.model, texts)

    def bind(self, reference: Any) -> None:
        mine = {p: i for i, p in enumerate(self.data.metadata.paths)}
        ref_paths = reference.metadata.paths
        missing = [p for p in ref_paths if p not in mine]
        if missing or len(mine) != len(ref_paths):
            example = missing[:1] or sorted(set(mine) - set(ref_paths))[:1]
            raise IndexError_(
                f"member {self.name!r} indexes a different set of images than the first member "
                f"({len(mine)} vs {len(ref_paths)}; e.g. {example})"
                "; build every member over the same gallery",
                path=self.data.dir,
            )
        self._perm = np.array([mine[p] for p in ref_paths], dtype=np.int64)
        self._inverse = np.empty(len(self._perm), dtype=np.int64)
        self._inverse[self._perm] = np.arange(len(self._perm))
        # fp16, reference order (a Flat index's float32 file holds the shards' fp16 values: no rounding)
        self._vectors = np.asarray(self.data.vectors)[self._perm].astype(np.float16, copy=False)
        # small galleries keep a float32 copy: a single query then skips converting every block (~5 ms/10k)
        self._vectors32 = (
            self._vectors.astype(np.float32) if self._vectors.size <= _FLOAT32_COPY_MAX else None
        )

    def scores(self, texts: Sequence[str], rows: np.ndarray | None) -> np.ndarray:
        assert self._vectors is not None, "bind() first"
        q = self.cache.get(texts)
        if self._vectors32 is not None:
            return q @ (self._vectors32 if rows is None else self._vectors32[rows]).T
        vectors = self._vectors if rows is None else self._vectors[rows]
        out = np.empty((len(q), len(vectors)), dtype=np.float32)
        for start in range(0, len(vectors), _BLOCK):
            block = np.asarray(vectors[start : start + _BLOCK], dtype=np.float32)
            out[:, start : start + len(block)] = q @ block.T
        return out

    def scores_at(self, texts: Sequence[str], rows_per_query: Sequence[np.ndarray]) -> list[np.ndarray]:
        assert self._vectors is not None
        q = self.cache.get(texts)
        return [np.asarray(self._vectors[r], dtype=np.float32) @ q[i] for i, r in enumerate(rows_per_query)]

    def top(
        self, texts: Sequence[str], n: int, rows: np.ndarray | None, where: dict[str, Any] | None = None
    ) -> list[np.ndarray]:
        """Reference rows of each text's top n from the member's own store (StoreFirstStage: its FAISS
        directory, or the store its manifest names, which gets `where` and answers in ids)."""
        assert self._perm is not None and self._inverse is not None, "bind() first"
        own = None
        if rows is not None:  # the same reference rows come back per filter: map them once
            if self._own_rows is None or self._own_rows[0] is not rows:
                self._own_rows = (rows, self._perm[rows])
            own = self._own_rows[1]
        found = self._first.search(texts, n, own, where=where)
        return [self._inverse[c.rows] for c in found]

    def stats(self, texts: Sequence[str], rows: np.ndarray | None) -> fusion.RowStats:
        assert self._vectors is not None
        key = b"" if rows is None else np.ascontiguousarray(rows).tobytes()
        if key not in self._gram:
            gram = np.zeros((self._vectors.shape[1],) * 2)
            total = np.zeros(self._vectors.shape[1])
            n = len(self._vectors) if rows is None else len(rows)
            for start in range(0, n, _BLOCK):
                idx = slice(start, start + _BLOCK) if rows is None else rows[start : start + _BLOCK]
                block = np.asarray(self._vectors[idx], dtype=np.float64)
                gram += block.T @ block
                total += block.sum(axis=0)
            if len(self._gram) > 16:
                self._gram.clear()
            self._gram[key] = (gram, total, n)
        gram, total, n = self._gram[key]
        return fusion.gram_stats(self.cache.get(texts), gram, total, n)


def open_members(
    ensemble_dir: Path,
    config: EnsembleConfig,
    device: str = "cpu",
    models: dict[str, Any] | None = None,
    caches: Callable[[str], TextCache] | None = None,
) -> tuple[Any, list[Member], dict[str, Any]]:
    """(reference IndexData, bound members, models by spec); `models` supplies already loaded ones and
    `caches(spec)` each model's query-vector cache (default: one per member).

    Every model's fingerprint must match its member index.
    """
    models = dict(models or {})
    members: list[Member] = []
    reference = None
    for m in config.members:
        index_dir = member_index_dir(ensemble_dir, m)
        if not index_dir.is_dir():
            raise IndexError_(
                f"member {m.name!r} has no index at {index_dir}; run `trafficsearch ensemble index`",
                path=ensemble_dir / ENSEMBLE_FILE,
                field=f"members.{m.name}",
            )
        data = open_index(index_dir)
        store = open_store(index_dir, data.manifest) if data.manifest.get("store") else None
        if m.model not in models:
            models[m.model] = load_model(m.model, device=device)
        model = models[m.model]
        check_fingerprint(model, data.manifest, index_dir, what=f"member {m.name!r}: model")
        reference = reference or data
        cache = caches(m.model) if caches is not None else None
        members.append(EmbeddingMember(m.name, data, model, cache=cache, store=store))
    assert reference is not None
    for member in members:
        member.bind(reference)
    return reference, members, models
