"""Per-model score normalisation and weighted fusion of similarity rows (one row per query).

Models disagree on scale (cosine of a CLIP vs a BLIP ITA vs attribute log-probabilities), so each member's
row over the (filtered) gallery is normalised per query before the weighted sum:

- `l2`: divide the row by its L2 norm over the gallery, the seed's `F.normalize(dim=-1)` (it rescales only:
  no centring, so a model whose scores are all high still dominates less than one with a wide spread);
- `zscore`: subtract the row mean, divide by its standard deviation;
- `minmax`: map the row's min..max to 0..1;
- `rrf`: reciprocal rank fusion, 1 / (k + rank) with rank 1 for the best image (k=60, Cormack et al. 2009):
  scale-free, uses only the order.

Statistics are taken over the whole row by default. When only a candidate subset of a row was scored (the
union-of-top-N mode of large galleries) pass `stats` computed elsewhere (e.g. exactly from a Gram matrix,
see `gram_stats`) so the subset is normalised as the full row would be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trafficsearch.errors import ConfigError

NORMALIZATIONS = ("l2", "zscore", "minmax", "rrf")
RRF_K = 60
_EPS = 1e-12


@dataclass
class RowStats:
    """Per-query statistics of full rows ([Q] arrays); fields a method does not need may be None."""

    norm: np.ndarray | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    min: np.ndarray | None = None
    max: np.ndarray | None = None


def check_normalization(method: str, field: str = "normalization") -> str:
    if method not in NORMALIZATIONS:
        raise ConfigError(
            f"unknown normalisation {method!r}; expected one of {', '.join(NORMALIZATIONS)}", field=field
        )
    return method


def row_stats(scores: np.ndarray) -> RowStats:
    """Exact statistics of full rows [Q, N]."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape[1] == 0:
        zero = np.zeros(len(scores))
        return RowStats(zero, zero, zero, zero, zero)
    return RowStats(
        norm=np.linalg.norm(scores, axis=1),
        mean=scores.mean(axis=1),
        std=scores.std(axis=1),
        min=scores.min(axis=1),
        max=scores.max(axis=1),
    )


def gram_stats(queries: np.ndarray, gram: np.ndarray, total: np.ndarray, n: int) -> RowStats:
    """Exact l2/zscore statistics of rows `queries @ V.T` without forming them: G = V.T V, total = V.sum(0).

    ||Vq||^2 = q.T G q and mean = q.total / n, so a row over millions of images costs a D x D product.
    """
    q = np.asarray(queries, dtype=np.float64)
    sq = np.einsum("qd,de,qe->q", q, gram, q)
    mean = q @ total / max(n, 1)
    var = np.maximum(sq / max(n, 1) - mean**2, 0.0)
    return RowStats(norm=np.sqrt(np.maximum(sq, 0.0)), mean=mean, std=np.sqrt(var))


def ranks_desc(scores: np.ndarray) -> np.ndarray:
    """1-based rank of every entry in its row, best first; ties keep column order (stable)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, scores.shape[1] + 1)[None, :].repeat(len(scores), 0), axis=1)
    return ranks


def normalize(
    scores: np.ndarray,
    method: str,
    *,
    stats: RowStats | None = None,
    ranks: np.ndarray | None = None,
    rrf_k: int = RRF_K,
) -> np.ndarray:
    """Normalise each row of `scores` [Q, N] -> float32 [Q, N]; `stats`/`ranks` describe the full rows."""
    check_normalization(method)
    scores = np.asarray(scores, dtype=np.float32)
    if method == "rrf":
        r = ranks_desc(scores) if ranks is None else ranks
        return (1.0 / (rrf_k + np.asarray(r, dtype=np.float64))).astype(np.float32)
    s = stats if stats is not None else row_stats(scores)
    if method == "l2":
        assert s.norm is not None
        out = scores / np.maximum(s.norm, _EPS)[:, None]
    elif method == "zscore":
        assert s.mean is not None and s.std is not None
        out = (scores - s.mean[:, None]) / np.maximum(s.std, _EPS)[:, None]
    else:
        if s.min is None or s.max is None:
            raise ConfigError("minmax needs each row's min and max", field="normalization")
        out = (scores - s.min[:, None]) / np.maximum(s.max - s.min, _EPS)[:, None]
    return out.astype(np.float32)


def check_weights(weights: Sequence[float], n: int) -> np.ndarray:
    w = np.asarray(list(weights), dtype=np.float64)
    if len(w) != n:
        raise ConfigError(f"{len(w)} weights for {n} members", field="weights")
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
    return w


def _zeros_like_rows(normalized: Sequence[np.ndarray | None]) -> np.ndarray:
    shaped = next((r for r in normalized if r is not None), None)
    if shaped is None:
        raise ConfigError("no member's rows to fuse", field="weights")
    return np.zeros_like(np.asarray(shaped, dtype=np.float32))


def fuse(normalized: Sequence[np.ndarray | None], weights: Sequence[float]) -> np.ndarray:
    """Weighted mean of normalised rows (the seed: equal weights, sum / number of models). A member of
    weight 0 may be None (not scored)."""
    w = check_weights(weights, len(normalized))
    out = _zeros_like_rows(normalized)
    for weight, rows in zip(w / w.sum(), normalized, strict=True):
        if weight:
            out += np.float32(weight) * np.asarray(rows, dtype=np.float32)
    return out


def fuse_per_query(normalized: Sequence[np.ndarray | None], weights: np.ndarray) -> np.ndarray:
    """Like `fuse`, with a weight row per query: `weights` [Q, M], each row summing to 1; a member whose
    column is all 0 may be None."""
    weights = np.asarray(weights, dtype=np.float32)
    out = _zeros_like_rows(normalized)
    for m, rows in enumerate(normalized):
        column = weights[:, m]
        if column.any():
            out += column[:, None] * np.asarray(rows, dtype=np.float32)
    return out


def fuse_rows(
    rows: Sequence[np.ndarray], weights: Sequence[float], method: str, rrf_k: int = RRF_K
) -> np.ndarray:
    """Normalise every member's full rows, then fuse: the exact path."""
    return fuse([normalize(r, method, rrf_k=rrf_k) for r in rows], weights)
