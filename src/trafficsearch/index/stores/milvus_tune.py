"""Choose a Milvus index type the way `index tune` chooses a FAISS one: measure recall@k of each setting
against exact search on real query embeddings, keep the fastest that reaches the target (FLAT otherwise)."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from trafficsearch.index.stores.milvus import MilvusStore
from trafficsearch.index.tune import recall_at_k

_BLOCK = 65_536


def exact_ids(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k image ids by a blocked scan of the (memory-mapped fp16) vectors."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_r = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(vectors), _BLOCK):
        block = np.asarray(vectors[start : start + _BLOCK], dtype=np.float32)
        scores = np.concatenate([best_s, queries @ block.T], axis=1)
        rows = np.concatenate(
            [best_r, np.broadcast_to(np.arange(start, start + len(block)), (len(queries), len(block)))],
            axis=1,
        )
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best_s, best_r = np.take_along_axis(scores, top, axis=1), np.take_along_axis(rows, top, axis=1)
    return ids[best_r]


def candidates(n: int) -> list[tuple[str, dict[str, Any], str, list[int]]]:
    """(index type, build params, search knob, knob values smallest first)."""
    nlist = 1 << max(2, round(math.log2(max(4.0, math.sqrt(n)))))
    out: list[tuple[str, dict[str, Any], str, list[int]]] = [("FLAT", {}, "", [0])]
    if n >= 30 * nlist:
        out.append(
            ("IVF_FLAT", {"nlist": nlist}, "nprobe", [p for p in (1, 2, 4, 8, 16, 32, 64, 128) if p <= nlist])
        )
    out.append(("HNSW", {"M": 16, "efConstruction": 200}, "ef", [16, 32, 64, 128, 256]))
    return out


def tune_milvus(
    store: MilvusStore,
    vectors: np.ndarray,
    ids: np.ndarray,
    queries: np.ndarray,
    *,
    k: int = 10,
    target: float = 0.95,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Try each candidate on the store's collection; leave the chosen one built; the measurement record."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, len(ids))
    truth = exact_ids(vectors, ids, queries, k)
    trials: list[dict[str, Any]] = []
    for index_type, build, knob, values in candidates(len(ids)):
        started = time.perf_counter()
        store.set_index(index_type, build, {})
        build_s = time.perf_counter() - started
        for value in values:
            search = {knob: int(value)} if knob else {}
            store.search_params = search
            started = time.perf_counter()
            _, found = store.search(queries, k)
            ms = (time.perf_counter() - started) * 1000 / len(queries)
            trial = {
                "index_type": index_type,
                "index_params": build,
                "search_params": search,
                "recall": recall_at_k(found, truth),
                "ms_per_query": ms,
                "build_s": build_s,
            }
            trials.append(trial)
            if log:
                log(f"{index_type} {search or ''} recall@{k}={trial['recall']:.4f} {ms:.3f} ms")
            if trial["recall"] >= target:
                break
    good = [t for t in trials if t["recall"] >= target]
    best = min(good, key=lambda t: t["ms_per_query"]) if good else trials[0]
    store.set_index(best["index_type"], best["index_params"], best["search_params"])
    record = {
        "k": k,
        "target_recall": target,
        "n_queries": len(queries),
        "n_vectors": len(ids),
        "chosen": best,
        "trials": trials,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    store.tune = record
    return record
