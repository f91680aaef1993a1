"""Approximate search is only used after its recall is measured: try IVF / HNSW / IVF-PQ settings against
exact search on real text queries and keep the fastest one whose recall@k reaches the target."""

from __future__ import annotations

import datetime as dt
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from trafficsearch.errors import ConfigError, TrafficSearchError
from trafficsearch.index.faiss_util import MAX_TRAIN, build_faiss, search

# Each candidate: a factory string and the values of its one search knob to sweep (smallest first).
Candidate = tuple[str, str | None, list[int]]


@dataclass
class Trial:
    factory: str
    params: dict[str, int]
    recall: float  # mean recall@k against exact inner-product search
    ms_per_query: float  # batch search time / queries
    build_s: float


@dataclass
class TuneResult:
    best: Trial
    trials: list[Trial]
    k: int
    target: float
    n_queries: int
    n_vectors: int
    index: Any = field(repr=False, default=None)

    def record(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "target_recall": self.target,
            "n_queries": self.n_queries,
            "n_vectors": self.n_vectors,
            "chosen": asdict(self.best),
            "trials": [asdict(t) for t in self.trials],
            "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.processor() or platform.machine()}, faiss {faiss.__version__}",
        }


def _pow2(x: float) -> int:
    return 1 << max(2, round(math.log2(max(x, 4))))


def default_candidates(n: int, dim: int) -> list[Candidate]:
    """A small grid scaled to the gallery: nlist around sqrt(n), enough training points per list."""
    candidates: list[Candidate] = [("Flat", None, [0])]
    nlists = sorted({_pow2(c * math.sqrt(n)) for c in (1, 2, 4)})
    for nlist in nlists:
        if n >= 30 * nlist:
            probes = [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256) if p <= nlist]
            candidates.append((f"IVF{nlist},Flat", "nprobe", probes))
    candidates.append(("HNSW32", "efSearch", [16, 32, 64, 128, 256]))
    # 4-bit fast-scan PQ: 8-bit PQ training took minutes on 20k vectors with faiss 1.15 on our CPUs.
    m = next((m for m in (dim // 4, dim // 8, dim // 2) if m and m % 2 == 0 and dim % m == 0), 0)
    nlist = nlists[0]
    if m and n >= 10_000 and n >= 30 * nlist:
        probes = [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256) if p <= nlist]
        candidates.append((f"IVF{nlist},PQ{m}x4fs", "nprobe", probes))
    return candidates


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = [len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits) / k)


def _time_search(
    index: faiss.Index, queries: np.ndarray, k: int, params: dict[str, int], repeats: int
) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        search(index, queries, k, params)
        best = min(best, time.perf_counter() - start)
    return best * 1000.0 / len(queries)


def tune_vectors(
    vectors: np.ndarray,
    queries: np.ndarray,
    *,
    k: int = 10,
    target: float = 0.95,
    candidates: Sequence[Candidate] | None = None,
    repeats: int = 3,
    max_train: int = MAX_TRAIN,
    log: Callable[[str], None] | None = None,
) -> TuneResult:
    """Measure every candidate (stopping each sweep at the first setting that reaches `target`)."""
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n, dim = data.shape
    if len(queries) == 0:
        raise TrafficSearchError("no queries to tune with")
    k = min(k, n)
    exact = faiss.IndexFlatIP(dim)
    exact.add(data)
    _, truth = exact.search(queries, k)
    trials: list[Trial] = []
    built: dict[str, faiss.Index] = {}
    for factory, knob, values in candidates or default_candidates(n, dim):
        start = time.perf_counter()
        try:
            index = exact if factory == "Flat" else build_faiss(data, factory, max_train=max_train)
        except ConfigError as exc:
            if log:
                log(f"skip {factory}: {exc.message}")
            continue
        build_s = time.perf_counter() - start
        built[factory] = index
        for value in values:
            params = {knob: int(value)} if knob else {}
            _, found = search(index, queries, k, params)
            trial = Trial(
                factory,
                params,
                recall_at_k(found, truth),
                _time_search(index, queries, k, params, repeats),
                build_s,
            )
            trials.append(trial)
            if log:
                log(f"{factory} {params or ''} recall@{k}={trial.recall:.4f} {trial.ms_per_query:.4f} ms")
            if trial.recall >= target:
                break
    good = [t for t in trials if t.recall >= target]
    best = min(good, key=lambda t: t.ms_per_query) if good else next(t for t in trials if t.factory == "Flat")
    return TuneResult(best, trials, k, target, len(queries), n, index=built[best.factory])


def encode_texts(model: Any, texts: Sequence[str]) -> np.ndarray:
    """The distinct texts' embeddings [Q, D] float32, in first-seen order, under the inference precision."""
    import torch

    from trafficsearch.models.device import inference_precision

    unique = list(dict.fromkeys(texts))
    with torch.inference_mode(), inference_precision(getattr(model, "device", "cpu")):
        return np.concatenate(
            [
                model.encode_texts(unique[i : i + 256]).float().cpu().numpy()
                for i in range(0, len(unique), 256)
            ]
        )


def tune_index_dir(
    index_dir: str | Path,
    texts: Sequence[str],
    model: Any | None = None,
    *,
    k: int = 10,
    target: float = 0.95,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> tuple[TuneResult, dict[str, Any]]:
    """Encode the distinct query texts with the index's model, tune, save the chosen index + measurement."""
    from trafficsearch.index.build import commit_faiss
    from trafficsearch.index.store import open_index
    from trafficsearch.models.factory import load_model

    index_dir = Path(index_dir)
    data = open_index(index_dir)
    if model is None:
        model = load_model(data.manifest["model_spec"], device=device)
    from trafficsearch.index.files import check_fingerprint

    check_fingerprint(model, data.manifest, index_dir)
    queries = encode_texts(model, texts)
    result = tune_vectors(np.asarray(data.vectors, dtype=np.float32), queries, k=k, target=target, log=log)
    record = result.record()
    manifest = commit_faiss(
        index_dir, result.index, {"factory": result.best.factory, "params": result.best.params}, record
    )
    return result, manifest
