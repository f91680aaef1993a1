"""Exact inner-product top-k as a blocked BLAS matmul: the engine's exact path.

Why not FAISS Flat's own search: on this CPU (2 shared cores) its exhaustive scan runs one thread per query
below `faiss.cvar.distance_compute_blas_threshold` (128,000 queries in faiss 1.15) and its BLAS path (an old
OpenMP OpenBLAS nested in FAISS's own OpenMP loop) collapses when the cores are busy; numpy's sgemm over the
same memory is faster and degrades gracefully (benchmarks/search_latency.py measures all of them).

The kernel scores a block of gallery rows with one sgemm (fp16-stored blocks are converted to float32
first), keeps each block's top k by `argpartition`, and merges: memory stays at one score block whatever the
gallery size. Ties go to the lower row, as in a stable sort of the full score row (the numpy oracle).
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

# Scores held at once (float32 elements): 64 MB. Fewer queries per call -> more rows per block.
SCORE_BUDGET = 1 << 24
MIN_BLOCK = 16_384
# Bytes per block when blocks must be copied (fp16 converted, or unaligned float32 realigned): small enough
# that the copy is still in the CPU cache when the sgemm reads it. At 10M x 256 over a memory-mapped FAISS
# file, 8 MB blocks took a one-query scan from 1.35 s (256 MB blocks) to 0.70 s, and 32 queries from 3.6 s
# to 2.2 s (same top-10; benchmarks/results/city_scale-10000000.md).
COPY_BYTES = 8 << 20
_MARGIN = 16  # extra candidates per block re-scored: near-ties at the k-th place stay in


def flat_storage(index: faiss.Index) -> np.ndarray | None:
    """A zero-copy float32 [ntotal, d] view of a plain IndexFlat's vectors (None for any other index).

    The view is only valid while `index` is alive and unchanged; callers hold the index.
    """
    index = faiss.downcast_index(index)
    if not isinstance(index, faiss.IndexFlat) or index.ntotal == 0:
        return None
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return None
    return faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)


def direct_scan(vectors: np.ndarray) -> bool:
    """Whether `topk` can hand blocks of `vectors` to BLAS as they are (aligned float32, no copy)."""
    return vectors.dtype == np.float32 and bool(vectors.flags.aligned)


def block_rows(n_queries: int, budget: int = SCORE_BUDGET) -> int:
    return max(MIN_BLOCK, budget // max(1, n_queries))


def topk(
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    rows: np.ndarray | None = None,
    *,
    block: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q,k'] float32, rows [Q,k'] int64) of the exact top k by inner product, best first.

    `vectors` is [N, D] float32 or float16 (a memory map is fine); `rows` restricts the search to those
    gallery rows (returned ids are still gallery rows). k' = min(k, number of rows searched).
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != vectors.shape[1]:
        raise ValueError(f"queries have shape {q.shape}, vectors have dim {vectors.shape[1]}")
    total = len(vectors) if rows is None else len(rows)
    k = max(0, min(int(k), total))
    if k == 0 or len(q) == 0:
        return np.empty((len(q), k), np.float32), np.empty((len(q), k), np.int64)
    step = block or block_rows(len(q))
    if not direct_scan(vectors):
        step = min(step, max(1024, COPY_BYTES // (4 * vectors.shape[1])))  # each block is copied
    best_s: np.ndarray | None = None
    best_r: np.ndarray | None = None
    for start in range(0, total, step):
        stop = min(total, start + step)
        ids = np.arange(start, stop) if rows is None else np.asarray(rows[start:stop], dtype=np.int64)
        part = vectors[start:stop] if rows is None else vectors[ids]
        if part.dtype != np.float32:
            part = part.astype(np.float32)
        elif not part.flags.aligned:
            # a memory-mapped FAISS file puts the float32 codes at an odd byte offset; numpy's matmul skips
            # BLAS for unaligned arrays (30x slower at 3,000 x 256), so one aligned copy of the block pays
            part = np.array(part)
        scores = q @ part.T  # [Q, B]: one sgemm
        kb = min(k + _MARGIN, stop - start)
        if kb < scores.shape[1]:
            top = np.argpartition(-scores, kb - 1, axis=1)[:, :kb]
        else:
            top = np.broadcast_to(np.arange(kb), scores.shape)
        # sgemm rounds a row's dot product differently by its position in the block, so equal vectors can
        # score 1 ulp apart; the candidates are re-scored one way for all, and ties then go to the lower row
        cand_s = (part[top] * q[:, None, :]).sum(axis=2, dtype=np.float32)
        cand_r = ids[top]
        if best_s is None:
            best_s, best_r = cand_s, cand_r
        else:
            best_s = np.concatenate([best_s, cand_s], axis=1)
            best_r = np.concatenate([best_r, cand_r], axis=1)
        best_s, best_r = _select(best_s, best_r, k)
    assert best_s is not None and best_r is not None
    return best_s, best_r.astype(np.int64)


def _select(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top k of each row, best first; equal scores ordered by gallery row (lower first)."""
    order = np.lexsort((rows, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


def search_exact(
    index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k over an index's gallery in FAISS's (scores, rows) layout, rows -1-padded to k.

    Scans `vectors` when they are aligned float32 (what merge writes under a Flat index: one sgemm per
    block, no copy), else the Flat index's own float32 storage (memory-mapped at an unaligned offset, so
    copied block by block), else the fp16 `vectors` (converted block by block).
    """
    storage = vectors if direct_scan(vectors) else flat_storage(index)
    scores, found = topk(storage if storage is not None else vectors, queries, k, rows)
    width = max(1, int(k))
    if found.shape[1] < width:  # FAISS pads with -1 / -inf where fewer rows qualify
        pad = width - found.shape[1]
        found = np.pad(found, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return scores, found


def is_exact(index: Any) -> bool:
    """Whether the engine should use this module instead of FAISS's search (a plain Flat index)."""
    return flat_storage(index) is not None
