"""The search engine: the one code path from text to ranked images, shared by CLI, evaluation and service.

text -> first stage top-`depth` over the allowed rows (one index's vector store, search/first_stage.py: the
FAISS directory or the store the manifest names, e.g. Milvus; or an ensemble's fusion,
search/ensemble/fused.py) -> candidate stages (ITM re-ranking) -> top-k Hits.

Kind routing (search/routing.py, `route=off|hard|soft`) decides which rows the first stage may return; the
query kind is parsed once per search and passed to routing and to the first stage (per-kind weights).
`open_engine` (search/opener.py) opens a plain index or an ensemble dir.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trafficsearch.errors import TrafficSearchError
from trafficsearch.index.store import IndexData
from trafficsearch.index.stores.base import VectorStore
from trafficsearch.search import routing
from trafficsearch.search.cache import TextCache, encode_queries
from trafficsearch.search.first_stage import StoreFirstStage
from trafficsearch.search.stages import Candidates, FirstStage, Stage


@dataclass
class Hit:
    id: int  # stable image id in this index
    name: str  # image name as the competition writes it
    score: float  # similarity after the last stage (cosine for the first stage)
    kind: str  # vehicle | pedestrian | unknown
    path: str  # relative to the gallery root (SearchEngine.image_path gives the absolute path)


class SearchEngine:
    """Search one gallery: a first stage, then `stages` (always) and `rerank_stages` (when rerank=True).

    The first stage is a search of one index's vector store (`StoreFirstStage`, the default, over `cache`'s
    query vectors of `model`; `store`: the FAISS directory unless given, e.g. the Milvus collection the
    manifest names) or an ensemble's fusion (search/ensemble/fused.py); `route` is the default kind
    routing. Open engines with search/opener.py `open_engine`; caches and stages come in here, never later.
    """

    def __init__(
        self,
        data: IndexData,
        model: Any,
        stages: Sequence[Stage] = (),
        rerank_stages: Sequence[Stage] = (),
        cache_size: int = 100_000,
        first_stage: FirstStage | None = None,
        route: str = "off",
        soft_penalty: float = routing.DEFAULT_SOFT_PENALTY,
        cache: TextCache | None = None,
        store: VectorStore | None = None,
    ) -> None:
        self.data = data
        self.model = model
        self.stages: list[Stage] = list(stages)
        self.rerank_stages: list[Stage] = list(rerank_stages)
        if first_stage is None:
            cache = cache if cache is not None else TextCache(self._encode_texts, capacity=cache_size)
            first_stage = StoreFirstStage(data, cache, store)
        self.first_stage: FirstStage = first_stage
        self.route = routing.check_route(route)
        self.soft_penalty = float(soft_penalty)
        # filter (JSON) -> allowed rows (None: every row); the same array comes back per filter
        self._filters: dict[str, np.ndarray | None] = {}

    @property
    def store(self) -> VectorStore | None:
        """The vector store the first stage searches (None for a fused first stage: members hold theirs)."""
        return getattr(self.first_stage, "store", None)

    @property
    def cache(self) -> TextCache | None:
        """The first stage's query-vector cache (None for a fused first stage: its members hold theirs)."""
        return getattr(self.first_stage, "cache", None)

    def caches(self) -> list[Any]:
        """Every cache a search reads (query vectors, re-ranking inputs): what a cold probe empties."""
        found = [self.cache] if self.cache is not None else []
        found += [m.cache for m in getattr(self.first_stage, "members", []) if getattr(m, "cache", None)]
        for stage in self.stages + self.rerank_stages:
            pixels = getattr(stage, "pixels", None)
            if pixels is not None:
                found.append(pixels)
        return found

    def with_first_stage(self, first_stage: FirstStage) -> SearchEngine:
        """A copy searching through `first_stage` (weight fitting); it shares this engine's filters."""
        other = copy.copy(self)
        other.first_stage = first_stage
        return other

    def _encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return encode_queries(self.model, texts)

    @staticmethod
    def _conditions(kind: str | None, where: dict[str, Any] | None) -> dict[str, Any]:
        """The filter as one condition dict (Metadata.rows_where format), `kind` folded in."""
        conditions = dict(where or {})
        if kind is not None:
            conditions["kind"] = kind
        return conditions

    def _rows(self, kind: str | None, where: dict[str, Any] | None) -> tuple[np.ndarray | None, int]:
        """(allowed rows or None for 'all rows', how many are allowed); cached per filter."""
        conditions = self._conditions(kind, where)
        if not conditions:
            return None, self.data.count
        key = json.dumps(conditions, sort_keys=True, default=str)
        if key not in self._filters:
            rows = self.data.metadata.rows_where(conditions)
            self._filters[key] = None if len(rows) == self.data.count else rows
        rows = self._filters[key]
        return rows, self.data.count if rows is None else len(rows)

    def candidates(
        self,
        texts: Sequence[str],
        depth: int,
        kind: str | None = None,
        where: dict[str, Any] | None = None,
        kinds: Sequence[str | None] | None = None,
    ) -> list[Candidates]:
        """First-stage candidates per query text (repeated texts are searched once); `kinds`: the texts'
        parsed kinds, when the caller has them."""
        rows, allowed = self._rows(kind, where)
        if allowed == 0 or depth <= 0:
            empty = Candidates(np.empty(0, np.int64), np.empty(0, np.float32))
            return [empty for _ in texts]
        first: dict[str, int] = {}
        for i, t in enumerate(texts):
            first.setdefault(t, i)
        unique = list(first)
        unique_kinds = None if kinds is None else [kinds[first[t]] for t in unique]
        conditions = self._conditions(kind, where) if rows is not None else None
        found = self.first_stage.search(unique, min(depth, allowed), rows, unique_kinds, where=conditions)
        by_text = dict(zip(unique, found, strict=True))
        return [by_text[t] for t in texts]

    def search(
        self,
        texts: Sequence[str],
        k: int = 10,
        kind: str | None = None,
        where: dict[str, Any] | None = None,
        rerank: bool = False,
        route: str | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits per text, in input order. `kind`/`where` filter on image metadata before ranking.

        `route` (off | hard | soft; None: the engine's default) routes each text to the kind it names,
        unless `kind` or `where["kind"]` is given.
        """
        if isinstance(texts, str):
            texts = [texts]
        if k < 1:
            raise TrafficSearchError(f"k must be at least 1, got {k}", field="k")
        reranks = self.rerank_stages if rerank else []
        depth = max([k, *(getattr(s, "depth", k) for s in self.stages + reranks)])
        candidates = self.staged_candidates(texts, depth, kind, where, route)
        for stage in reranks:
            candidates = stage(texts, candidates)
        return [self._hits(c.top(k)) for c in candidates]

    def staged_candidates(
        self,
        texts: Sequence[str],
        depth: int,
        kind: str | None = None,
        where: dict[str, Any] | None = None,
        route: str | None = None,
    ) -> list[Candidates]:
        """Candidates per text after the first stage, routing and `stages`: what the re-rank stages receive
        (search/ensemble/rerank_fit.py fits the re-rank weight on them)."""
        route = self.route if route is None else routing.check_route(route)
        parsed = [routing.query_kind(t) for t in texts]  # once per search, passed on
        if route == "off" or kind is not None or "kind" in (where or {}):
            candidates = self.candidates(texts, depth, kind, where, parsed)
        else:
            candidates = routing.routed_candidates(
                self.candidates,
                texts,
                parsed,
                depth,
                where,
                route,
                self.data.metadata.kinds,
                self.soft_penalty,
            )
        for stage in self.stages:
            candidates = stage(texts, candidates)
        return candidates

    def _hits(self, candidates: Candidates) -> list[Hit]:
        meta = self.data.metadata
        return [
            Hit(int(meta.ids[row]), meta.names[row], float(score), str(meta.kinds[row]), meta.paths[row])
            for row, score in zip(candidates.rows.tolist(), candidates.scores.tolist(), strict=True)
        ]

    def image_path(self, image_id: int) -> Path:
        """Absolute path of an image (paths in the index are relative to the gallery root)."""
        row = self.data.metadata.row_of_id(image_id)
        return (self.data.gallery_root / self.data.metadata.paths[row]).resolve()

    def vector(self, image_id: int) -> np.ndarray:
        return np.asarray(self.data.vectors[self.data.metadata.row_of_id(image_id)], dtype=np.float32)

    def info(self) -> dict[str, Any]:
        m = self.data.manifest
        tune = m.get("tune") or {}
        info = {
            "index_dir": str(self.data.dir),
            "count": self.data.count,
            "dim": self.data.dim,
            "model": m["model_name"],
            "model_spec": m["model_spec"],
            "model_fingerprint": m["model_fingerprint"],
            "faiss": m["faiss"],
            "tuned_recall": (tune.get("chosen") or {}).get("recall"),
            "kinds": m.get("kinds", {}),
            "skipped": m.get("n_skipped", 0),
            "gallery_root": m["gallery_root"],
            "created": m.get("created"),
            "updated": m.get("updated"),
            "format_version": m["format_version"],
            "stages": [type(s).__name__ for s in self.stages],
            "rerank_stages": [type(s).__name__ for s in self.rerank_stages],
            "route": self.route,
        }
        config = getattr(self.model, "config", None)
        if hasattr(self.first_stage, "members") and config is not None:  # an ensemble
            info["model"] = config.name
            info["ensemble"] = config.to_dict()
        return info
