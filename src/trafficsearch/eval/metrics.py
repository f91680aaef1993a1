"""Retrieval metrics: the official mAP@10 exactly as the competition scorer computes it, plus numbers
that cannot be gamed by short lists (mAP over min(R, k), Recall@k), overall and per kind.

Relevance is judged with numpy over integer codes instead of calling `records.is_relevant` per pair, so
the real val set (10,000 queries x 10,000 images) scores in about a second. A pedestrian's code is its
21-value vector as bits (bit i = attribute i); a vehicle's code is an id of its label string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from trafficsearch.data.records import KINDS, Record
from trafficsearch.errors import TrafficSearchError

Rule = Literal["equal", "contain"]
RULES: tuple[Rule, ...] = ("equal", "contain")
_KIND_ID = {kind: i for i, kind in enumerate(KINDS)}
_PEDESTRIAN = _KIND_ID["pedestrian"]
_GENDER_BIT = 1  # attribute 0 (Female) must match exactly under `contain`
_CHUNK = 1024  # query codes per block when counting contain-relevant images (bounds memory)


@dataclass(frozen=True)
class Scores:
    """Metrics over one group of queries (all, or one kind). Fractions in [0, 1], not x100."""

    n_queries: int
    map_official: float  # the scorer's AP: divides by the relevant images found in the list
    map_at_k: float  # divides by min(R, k); each gallery image counts once, so it stays in [0, 1]
    recall: dict[int, float]  # k -> fraction of queries with a relevant image in the top k

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_queries": self.n_queries,
            "map_official": self.map_official,
            "map_at_k": self.map_at_k,
            "recall": {str(k): v for k, v in self.recall.items()},
        }


@dataclass(frozen=True)
class Judgement:
    """Which submitted names are relevant, per query: the input every metric is computed from.

    `hits[i, j]` is True when the j-th name submitted for query i is relevant (False past the end of
    the list); `lengths[i]` is the list length; `n_relevant[i]` is R, the relevant images in the gallery;
    `first[i, j]` is False for a repeat of a name already listed earlier for the same query.
    """

    hits: np.ndarray
    first: np.ndarray
    lengths: np.ndarray
    n_relevant: np.ndarray
    kinds: np.ndarray  # kind id per query (index into records.KINDS)
    n_unknown: int  # submitted names that are not in the gallery (never relevant)


@dataclass(frozen=True)
class EvalResult:
    """Overall and per-kind scores under one relevance rule; `ap` keeps the official AP per query."""

    rule: str
    k: int
    overall: Scores
    per_kind: dict[str, Scores]
    n_unknown: int = 0
    ap: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "k": self.k,
            "overall": self.overall.to_dict(),
            "per_kind": {kind: s.to_dict() for kind, s in self.per_kind.items()},
            "n_unknown_names": self.n_unknown,
        }


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise TrafficSearchError(f"unknown relevance rule {rule!r}: expected one of {', '.join(RULES)}")


def _codes(
    records: Sequence[Record], vehicle_ids: dict[str, int], role: str
) -> tuple[np.ndarray, np.ndarray]:
    """Kind id and relevance code per record; vehicle label ids are shared through `vehicle_ids`."""
    kinds = np.empty(len(records), dtype=np.int8)
    codes = np.empty(len(records), dtype=np.int64)
    for i, record in enumerate(records):
        kinds[i] = _KIND_ID[record.kind]
        if record.kind == "vehicle":
            if record.vehicle is None:
                raise TrafficSearchError(
                    f"{role} {i} ({record.image!r}) has no vehicle annotation to judge relevance by",
                    field="attributes",
                )
            codes[i] = vehicle_ids.setdefault(record.vehicle.label(), len(vehicle_ids))
        else:
            if record.vector is None:
                raise TrafficSearchError(
                    f"{role} {i} ({record.image!r}) has no attribute vector to judge relevance by",
                    field="attributes",
                )
            codes[i] = sum(bit << pos for pos, bit in enumerate(record.vector))
    return kinds, codes


def _relevant(
    qkind: np.ndarray, qcode: np.ndarray, gkind: np.ndarray, gcode: np.ndarray, rule: str
) -> np.ndarray:
    """Broadcasting relevance test, the vectorised twin of `records.is_relevant`."""
    same_kind = qkind == gkind
    if rule == "equal":
        return same_kind & (qcode == gcode)
    # contain: gender equal and no attribute of the query missing from the image; vehicles stay equal.
    contained = ((qcode & ~gcode) | ((qcode ^ gcode) & _GENDER_BIT)) == 0
    return same_kind & np.where(qkind == _PEDESTRIAN, contained, qcode == gcode)


def _count_relevant(
    qkind: np.ndarray, qcode: np.ndarray, gkind: np.ndarray, gcode: np.ndarray, rule: str
) -> np.ndarray:
    """R per query: relevant gallery images, computed once per distinct (kind, code) pair."""
    q_pairs = np.stack([qkind.astype(np.int64), qcode], axis=1)
    g_pairs = np.stack([gkind.astype(np.int64), gcode], axis=1)
    uq, q_inverse = np.unique(q_pairs, axis=0, return_inverse=True)
    ug, g_counts = (
        np.unique(g_pairs, axis=0, return_counts=True) if len(g_pairs) else (g_pairs, np.zeros(0, int))
    )
    totals = np.zeros(len(uq), dtype=np.int64)
    for start in range(0, len(uq), _CHUNK):
        block = uq[start : start + _CHUNK]
        match = _relevant(block[:, :1], block[:, 1:2], ug[None, :, 0], ug[None, :, 1], rule)
        totals[start : start + _CHUNK] = match.astype(np.int64) @ g_counts
    return totals[q_inverse.reshape(-1)]


def judge(
    queries: Sequence[Record],
    gallery: Sequence[Record],
    ranked_names: Sequence[Sequence[str]],
    rule: Rule = "equal",
) -> Judgement:
    """Mark each submitted name relevant or not for its query, and count R per query."""
    _check_rule(rule)
    if len(ranked_names) != len(queries):
        raise TrafficSearchError(f"{len(ranked_names)} ranked lists for {len(queries)} queries")
    vehicle_ids: dict[str, int] = {}
    gkind, gcode = _codes(gallery, vehicle_ids, "gallery image")
    qkind, qcode = _codes(queries, vehicle_ids, "query")
    position = {record.image: i for i, record in enumerate(gallery)}
    lengths = np.array([len(names) for names in ranked_names], dtype=np.int64)
    width = max(int(lengths.max(initial=0)), 1)
    index = np.full((len(queries), width), -1, dtype=np.int64)
    n_unknown = 0
    for i, names in enumerate(ranked_names):
        row = [position.get(name, -1) for name in names]
        n_unknown += row.count(-1)
        index[i, : len(row)] = row
    valid = index >= 0
    safe = np.where(valid, index, 0)
    hits = valid & _relevant(qkind[:, None], qcode[:, None], gkind[safe], gcode[safe], rule)
    # first[i, j]: no earlier position of row i holds the same name (padding never repeats a real name).
    earlier = np.tril(np.ones((width, width), dtype=bool), k=-1)
    same = index[:, :, None] == index[:, None, :]
    first = ~(same & earlier[None]).any(axis=2) if width <= 64 else _first_occurrence(index)
    n_relevant = _count_relevant(qkind, qcode, gkind, gcode, rule) if len(queries) else np.zeros(0, np.int64)
    return Judgement(
        hits=hits, first=first, lengths=lengths, n_relevant=n_relevant, kinds=qkind, n_unknown=n_unknown
    )


def _first_occurrence(index: np.ndarray) -> np.ndarray:
    """Row-wise first-occurrence mask for long lists, where the pairwise cube would be too large."""
    first = np.zeros(index.shape, dtype=bool)
    for i, row in enumerate(index):
        _, where = np.unique(row, return_index=True)
        first[i, where] = True
    return first


def official_ap(hits: np.ndarray) -> np.ndarray:
    """The scorer's AP per row: at each hit, hits-so-far / rank; divide by hits found; 0 if none.

    Runs over the whole submitted list (no cut at k) and counts repeated names again, as the scorer does.
    """
    found = np.cumsum(hits, axis=1)
    ranks = np.arange(1, hits.shape[1] + 1)
    total = np.where(hits, found / ranks, 0.0).sum(axis=1)
    n_hits = found[:, -1] if hits.shape[1] else np.zeros(len(hits))
    return np.divide(total, n_hits, out=np.zeros(len(hits)), where=n_hits > 0)


def ap_at_k(hits: np.ndarray, first: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """AP over the top k dividing by min(R, k); repeats do not count twice, so it cannot exceed 1."""
    top = hits[:, :k] & first[:, :k]
    found = np.cumsum(top, axis=1)
    ranks = np.arange(1, top.shape[1] + 1)
    total = np.where(top, found / ranks, 0.0).sum(axis=1)
    denom = np.minimum(n_relevant, k)
    return np.divide(total, denom, out=np.zeros(len(hits)), where=denom > 0)


def recall_at(hits: np.ndarray, k: int) -> np.ndarray:
    """1.0 where a relevant image is among the first k names, else 0.0."""
    return hits[:, :k].any(axis=1).astype(np.float64)


def recall_ks(k: int) -> tuple[int, ...]:
    """The cut-offs reported: 1, 5 and k (10 by default), those not above k."""
    return tuple(sorted({m for m in (1, 5) if m < k} | {k}))


def _scores(ap: np.ndarray, apk: np.ndarray, recalls: dict[int, np.ndarray], mask: np.ndarray) -> Scores:
    n = int(mask.sum())

    def mean(values: np.ndarray) -> float:
        return float(values[mask].mean()) if n else 0.0

    return Scores(
        n_queries=n,
        map_official=mean(ap),
        map_at_k=mean(apk),
        recall={m: mean(r) for m, r in recalls.items()},
    )


def score(judgement: Judgement, rule: str, k: int = 10) -> EvalResult:
    """Aggregate a Judgement into overall and per-kind numbers (kinds without queries are left out)."""
    if k < 1:
        raise TrafficSearchError(f"k must be at least 1, got {k}")
    ap = official_ap(judgement.hits)
    apk = ap_at_k(judgement.hits, judgement.first, judgement.n_relevant, k)
    recalls = {m: recall_at(judgement.hits, m) for m in recall_ks(k)}
    everyone = np.ones(len(ap), dtype=bool)
    per_kind = {
        kind: _scores(ap, apk, recalls, judgement.kinds == kind_id)
        for kind, kind_id in _KIND_ID.items()
        if (judgement.kinds == kind_id).any()
    }
    return EvalResult(
        rule=rule,
        k=k,
        overall=_scores(ap, apk, recalls, everyone),
        per_kind=per_kind,
        n_unknown=judgement.n_unknown,
        ap=ap,
    )


def evaluate(
    queries: Sequence[Record],
    gallery: Sequence[Record],
    ranked_names: Sequence[Sequence[str]],
    rule: Rule = "equal",
    k: int = 10,
) -> EvalResult:
    """Score ranked lists of gallery image names, one per query, under a relevance rule.

    Query i's relevance comes from queries[i]'s annotation; the gallery is the set of labelled images
    (names not in it count as wrong).
    """
    return score(judge(queries, gallery, ranked_names, rule), rule, k)


def random_ranking(gallery: Sequence[Record], n_queries: int, k: int = 10, seed: int = 0) -> list[list[str]]:
    """k distinct gallery names per query, uniformly at random: the floor every model must beat."""
    names = [record.image for record in gallery]
    rng = np.random.default_rng(seed)
    size = min(k, len(names))
    return [[names[j] for j in rng.choice(len(names), size=size, replace=False)] for _ in range(n_queries)]
