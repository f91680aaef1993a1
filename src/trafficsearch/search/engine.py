"""The search engine: the one code path from text to ranked images, shared by CLI, evaluation and service.

text -> (cached) text embedding -> FAISS top-`depth` (filtered by an id selector, so a kind/metadata filter
never loses hits to over-fetching) -> candidate stages (fusion / ITM re-ranking hooks) -> top-k Hits.

An ensemble index dir (search/ensemble.py) opens through the same `SearchEngine.open`: its `first_stage`
(fused rows of several models) replaces the FAISS search, everything after it is shared. Kind routing
(search/routing.py, `route=off|hard|soft`) decides which rows the first stage may return.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from trafficsearch.errors import TrafficSearchError
from trafficsearch.index.files import model_fingerprint
from trafficsearch.index.store import IndexData, open_index
from trafficsearch.index.stores.base import VectorStore
from trafficsearch.index.stores.factory import open_store
from trafficsearch.index.stores.faiss_dir import FaissDirStore
from trafficsearch.search import routing
from trafficsearch.search.cache import TextCache, encode_queries
from trafficsearch.search.stages import Candidates, FirstStage, Stage

_QUERY_CHUNK = 1024


@dataclass
class Hit:
    id: int  # stable image id in this index
    name: str  # image name as the competition writes it
    score: float  # similarity after the last stage (cosine for the first stage)
    kind: str  # vehicle | pedestrian | unknown
    path: str  # relative to the gallery root (SearchEngine.image_path gives the absolute path)


class SearchEngine:
    """Search one index with its model. `stages` always run; `rerank_stages` only when rerank=True.

    `first_stage` (an ensemble's fusion) replaces the FAISS search; `route` is the default kind routing.
    `store` answers the (filtered) top-k: the index directory's FAISS index by default, or the vector store
    the manifest names (e.g. a Milvus collection, filters pushed down).
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
        store: VectorStore | None = None,
    ) -> None:
        self.data = data
        self.store: VectorStore = store if store is not None else FaissDirStore(data.dir, data)
        self.model = model
        self.stages: list[Stage] = list(stages)
        self.rerank_stages: list[Stage] = list(rerank_stages)
        self.first_stage = first_stage
        self.route = routing.check_route(route)
        self.soft_penalty = float(soft_penalty)
        self.cache = TextCache(self._encode_texts, capacity=cache_size)
        self._selectors: dict[str, tuple[faiss.IDSelector | None, np.ndarray, int]] = {}

    @classmethod
    def open(cls, index_dir: str | Path, model: Any | None = None, device: str = "cpu") -> SearchEngine:
        """Open an index with its model: the manifest's spec by default, or a model / spec that must match.

        An ensemble index dir (with ensemble.yaml) loads its members' models itself; `model` must be None.
        """
        from trafficsearch.search.ensemble import is_ensemble_dir, open_ensemble_engine

        if is_ensemble_dir(index_dir):
            if model is not None:
                raise TrafficSearchError(
                    "an ensemble index loads its members' models from ensemble.yaml; do not pass a model",
                    path=index_dir,
                    field="model",
                )
            return open_ensemble_engine(index_dir, device=device, engine_cls=cls)
        data = open_index(index_dir)
        manifest = data.manifest
        if model is None or isinstance(model, str | Path):
            from trafficsearch.index.build import load_model_spec

            model = load_model_spec(manifest["model_spec"] if model is None else model, device=device)
        if model_fingerprint(dict(model.manifest())) != manifest["model_fingerprint"]:
            raise TrafficSearchError(
                f"model {model.name!r} is not the model this index was built with "
                f"({manifest['model_name']!r}, "
                f"fingerprint {manifest['model_fingerprint']}); rebuild the index or pass the same model",
                path=Path(index_dir) / "manifest.json",
                field="model_fingerprint",
            )
        if int(model.embed_dim) != data.dim:
            raise TrafficSearchError(f"model dim {model.embed_dim} != index dim {data.dim}", path=index_dir)
        store = open_store(index_dir, manifest) if manifest.get("store") else None
        return cls(data, model, store=store)

    def _encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return encode_queries(self.model, texts)

    def _selector(
        self, kind: str | None, where: dict[str, Any] | None
    ) -> tuple[faiss.IDSelector | None, int]:
        """(selector or None for 'all rows', number of allowed rows); cached per filter."""
        conditions = dict(where or {})
        if kind is not None:
            conditions["kind"] = kind
        if not conditions:
            return None, self.data.count
        key = json.dumps(conditions, sort_keys=True, default=str)
        if key not in self._selectors:
            rows = self.data.metadata.rows_where(conditions)
            selector = None if len(rows) == self.data.count else faiss.IDSelectorBatch(rows)
            self._selectors[key] = (selector, rows, len(rows))  # rows kept alive for the selector
        selector, _, allowed = self._selectors[key]
        return selector, allowed

    def candidates(
        self, texts: Sequence[str], depth: int, kind: str | None = None, where: dict[str, Any] | None = None
    ) -> list[Candidates]:
        """First-stage candidates per query text (repeated texts are searched once)."""
        selector, allowed = self._selector(kind, where)
        unique = list(dict.fromkeys(texts))
        if allowed == 0 or depth <= 0:
            empty = Candidates(np.empty(0, np.int64), np.empty(0, np.float32))
            return [empty for _ in texts]
        depth = min(depth, allowed)
        if self.first_stage is not None:
            rows = None if selector is None else self._allowed_rows(kind, where)
            fused = dict(zip(unique, self.first_stage.search(unique, depth, rows), strict=True))
            return [fused[t] for t in texts]
        conditions = {**(where or {}), **({"kind": kind} if kind is not None else {})}
        found: dict[str, Candidates] = {}
        for start in range(0, len(unique), _QUERY_CHUNK):
            chunk = unique[start : start + _QUERY_CHUNK]
            scores, rows = self._store_search(self.cache.get(chunk), depth, conditions)
            for text, s, r in zip(chunk, scores, rows, strict=True):
                keep = r >= 0
                found[text] = Candidates(r[keep].astype(np.int64), s[keep].astype(np.float32))
        return [found[t] for t in texts]

    def _store_search(
        self, vectors: np.ndarray, depth: int, conditions: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) from the vector store; stores answer in image ids, mapped to this index's rows."""
        if isinstance(self.store, FaissDirStore):
            return self.store.search_rows(vectors, depth, conditions or None)
        scores, ids = self.store.search(vectors, depth, conditions or None)
        return scores, self.data.metadata.rows_of_ids(ids)

    def _allowed_rows(self, kind: str | None, where: dict[str, Any] | None) -> np.ndarray:
        conditions = {**(where or {}), **({"kind": kind} if kind is not None else {})}
        return self._selectors[json.dumps(conditions, sort_keys=True, default=str)][1]

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
        stages = self.stages + (self.rerank_stages if rerank else [])
        depth = max([k, *(getattr(s, "depth", k) for s in stages)])
        route = self.route if route is None else routing.check_route(route)
        if route == "off" or kind is not None or "kind" in (where or {}):
            candidates = self.candidates(texts, depth, kind, where)
        else:
            candidates = routing.routed_candidates(
                self.candidates, texts, depth, where, route, self.data.metadata.kinds, self.soft_penalty
            )
        for stage in stages:
            candidates = stage(texts, candidates)
        return [self._hits(c.top(k)) for c in candidates]

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
        if self.first_stage is not None and config is not None:
            info["model"] = config.name
            info["ensemble"] = config.to_dict()
        return info
