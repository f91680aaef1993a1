"""The fused first stage: each member's score rows normalised, weighted per query kind, summed, top-`depth`.

Large galleries: `candidates: N` scores only the union of each member's FAISS top-N. l2 and zscore stay
exact there (row norm and mean come from a D x D Gram matrix, `fusion.gram_stats`); minmax takes min/max over
the union and rrf ranks beyond a member's top-N as N+1 (approximations).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from trafficsearch.search import fusion
from trafficsearch.search.ensemble.members import Member
from trafficsearch.search.routing import query_kind
from trafficsearch.search.stages import Candidates

_QUERY_CHUNK = 256


class FusedFirstStage:
    """Replaces the engine's single-index FAISS search: fused top-`depth` over the (filtered) gallery."""

    def __init__(
        self,
        members: Sequence[Member],
        weights: Sequence[float],
        normalization: str = "l2",
        rrf_k: int = fusion.RRF_K,
        candidates: int | None = None,
        kind_weights: dict[str, Sequence[float]] | None = None,
    ) -> None:
        self.members = list(members)
        self.weights = fusion.check_weights(weights, len(self.members))
        self.kind_weights = {
            kind: fusion.check_weights(w, len(self.members)) for kind, w in (kind_weights or {}).items()
        }
        self.normalization = fusion.check_normalization(normalization)
        self.rrf_k, self.n_candidates = rrf_k, candidates
        # (texts, rows) -> normalised rows; only set on copies made by `reweighted` with a memo
        self._memo: dict[tuple[tuple[str, ...], int | None], tuple[Any, list[np.ndarray]]] | None = None

    def reweighted(
        self,
        weights: Sequence[float],
        kind_weights: dict[str, Sequence[float]] | None = None,
        memo: dict[Any, Any] | None = None,
    ) -> FusedFirstStage:
        """The same members and normalisation with other weights; copies given one `memo` dict share their
        normalised rows (weight fitting: only the weights change between trials)."""
        other = copy.copy(self)
        other.weights = fusion.check_weights(weights, len(self.members))
        other.kind_weights = {
            kind: fusion.check_weights(w, len(self.members)) for kind, w in (kind_weights or {}).items()
        }
        other._memo = memo
        return other

    def query_weights(self, texts: Sequence[str], kinds: Sequence[str | None] | None = None) -> np.ndarray:
        """[Q, M] weights summing to 1 per query: the weights of the kind its text names, else the default.

        `kinds`: each text's parsed kind (the engine parses once per search); parsed here when None."""
        if kinds is None:
            kinds = [query_kind(t) for t in texts]
        rows = [self.kind_weights.get(k or "", self.weights) for k in kinds]
        w = np.asarray(rows, dtype=np.float64).reshape(len(texts), len(self.members))
        return w / w.sum(axis=1, keepdims=True)

    def normalized_rows(
        self, texts: Sequence[str], rows: np.ndarray | None, active: Sequence[bool] | None = None
    ) -> list[np.ndarray | None]:
        """Each member's normalised full rows [Q, N]; None for a member `active` leaves out (a weight of 0
        for every query: its text is not encoded, its rows not scored)."""
        key = (tuple(texts), None if rows is None else id(rows))
        if self._memo is not None and key in self._memo and self._memo[key][0] is rows:
            out = self._memo[key][1]
        else:
            out = [None] * len(self.members)
            if self._memo is not None:
                self._memo[key] = (rows, out)  # rows kept alive with the entry, so its id stays theirs
        for i, member in enumerate(self.members):
            if out[i] is None and (active is None or active[i]):
                out[i] = fusion.normalize(member.scores(texts, rows), self.normalization, rrf_k=self.rrf_k)
        return out

    def search(
        self,
        texts: Sequence[str],
        depth: int,
        rows: np.ndarray | None,
        kinds: Sequence[str | None] | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[Candidates]:
        """`where`: the conditions `rows` came from, pushed to each member's store (union mode)."""
        if self.kind_weights and kinds is None:
            kinds = [query_kind(t) for t in texts]
        out: list[Candidates] = []
        for start in range(0, len(texts), _QUERY_CHUNK):
            chunk = list(texts[start : start + _QUERY_CHUNK])
            chunk_kinds = None if kinds is None else list(kinds[start : start + _QUERY_CHUNK])
            if self.n_candidates is None:
                out.extend(self._exact(chunk, depth, rows, chunk_kinds))
            else:
                out.extend(self._union(chunk, depth, rows, chunk_kinds, where))
        return out

    def _exact(
        self, texts: list[str], depth: int, rows: np.ndarray | None, kinds: list[str | None] | None
    ) -> list[Candidates]:
        if not self.kind_weights:
            normalized = self.normalized_rows(texts, rows, self.weights > 0)
            fused = fusion.fuse(normalized, self.weights)
        else:
            weights = self.query_weights(texts, kinds)
            normalized = self.normalized_rows(texts, rows, weights.any(axis=0))
            fused = fusion.fuse_per_query(normalized, weights)
        return [_top(fused[i], depth, rows) for i in range(len(texts))]

    def _union(
        self,
        texts: list[str],
        depth: int,
        rows: np.ndarray | None,
        kinds: list[str | None] | None,
        where: dict[str, Any] | None = None,
    ) -> list[Candidates]:
        n = max(int(self.n_candidates or 0), depth)
        tops = [m.top(texts, n, rows, where) for m in self.members]
        union = [np.unique(np.concatenate([t[i] for t in tops])) for i in range(len(texts))]
        fused = [np.zeros(len(u), np.float32) for u in union]
        weights = self.query_weights(texts, kinds)
        for m, (member, top) in enumerate(zip(self.members, tops, strict=True)):
            if not weights[:, m].any():
                continue
            values = member.scores_at(texts, union)
            stats = member.stats(texts, rows) if self.normalization in ("l2", "zscore") else None
            for i, v in enumerate(values):
                if self.normalization == "rrf":
                    rank = {int(r): j + 1 for j, r in enumerate(_sorted_rows(top[i], member, texts[i]))}
                    ranks = np.array([rank.get(int(r), n + 1) for r in union[i]], dtype=np.float64)
                    norm = fusion.normalize(v[None], "rrf", ranks=ranks[None], rrf_k=self.rrf_k)[0]
                else:
                    s = None
                    if stats is not None:
                        s = fusion.RowStats(
                            stats.norm[i : i + 1], stats.mean[i : i + 1], stats.std[i : i + 1]
                        )
                    norm = fusion.normalize(v[None], self.normalization, stats=s)[0]
                fused[i] += np.float32(weights[i, m]) * norm
        out = []
        for u, f in zip(union, fused, strict=True):
            order = np.lexsort((u, -f))[:depth]
            out.append(Candidates(u[order].astype(np.int64), f[order]))
        return out


def _sorted_rows(top: np.ndarray, member: Member, text: str) -> np.ndarray:
    """A member's top rows best first (FAISS returns them sorted; argpartition does not)."""
    scores = member.scores_at([text], [top])[0]
    return top[np.lexsort((top, -scores))]


def _top(row: np.ndarray, depth: int, rows: np.ndarray | None) -> Candidates:
    depth = min(depth, len(row))
    if depth <= 0:
        return Candidates(np.empty(0, np.int64), np.empty(0, np.float32))
    if depth * 2 >= len(row):
        part = np.argsort(-row, kind="stable")[:depth]
    else:  # every entry tied with the k-th joins, so ties go to the lower row as in a stable full sort
        threshold = row[np.argpartition(-row, depth - 1)[depth - 1]]
        part = np.flatnonzero(row >= threshold)
        part = part[np.lexsort((part, -row[part]))][:depth]
    ref_rows = part if rows is None else rows[part]
    return Candidates(ref_rows.astype(np.int64), row[part].astype(np.float32))
