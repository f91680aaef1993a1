"""Kind routing: a vehicle query should not be answered with pedestrians (and vice versa).

The rule is textual: `parse_query` says vehicle, pedestrian or None (no routing for that query).
- `hard`: images of the other kind are removed before ranking (images of unknown kind stay);
- `soft`: images of the other kind lose `penalty` (in the engine's score units: cosine for one model, the
  fused score for an ensemble), so a strong other-kind match can still appear.
Both are exact: soft routing merges the top `depth` of the routed kind with the top `depth` overall.
An explicit `kind=`/`where={"kind": ...}` filter from the caller always wins over routing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from trafficsearch.data.query_parse import parse_query
from trafficsearch.errors import ConfigError
from trafficsearch.search.stages import Candidates, sort_candidates

ROUTES = ("off", "hard", "soft")
OTHER_KIND = {"vehicle": "pedestrian", "pedestrian": "vehicle"}
DEFAULT_SOFT_PENALTY = 0.1

CandidateFn = Callable[
    [Sequence[str], int, str | None, dict[str, Any] | None, Sequence[str | None] | None], list[Candidates]
]


def check_route(route: str, field: str = "route") -> str:
    if route not in ROUTES:
        raise ConfigError(f"unknown route {route!r}; expected one of {', '.join(ROUTES)}", field=field)
    return route


@lru_cache(maxsize=100_000)
def query_kind(text: str) -> str | None:
    """vehicle | pedestrian | None, from the text alone (cached: query files repeat texts)."""
    return parse_query(text).kind


def without_kind(where: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    """`where` plus "not the other kind" for a query routed to `kind`."""
    return {**(where or {}), "kind": {"ne": OTHER_KIND[kind]}}


def soften(
    everything: Candidates, routed: Candidates, kinds: np.ndarray, other: str, penalty: float
) -> Candidates:
    """Union of both candidate lists; rows of kind `other` lose `penalty`; best first."""
    rows = np.concatenate([routed.rows, everything.rows])
    scores = np.concatenate([routed.scores, everything.scores]).astype(np.float32)
    rows, first = np.unique(rows, return_index=True)
    scores = scores[first]
    scores = scores - np.float32(penalty) * (kinds[rows] == other).astype(np.float32)
    return sort_candidates(rows, scores)


def routed_candidates(
    candidates: CandidateFn,
    texts: Sequence[str],
    parsed: Sequence[str | None],
    depth: int,
    where: dict[str, Any] | None,
    route: str,
    kinds: np.ndarray,
    penalty: float = DEFAULT_SOFT_PENALTY,
) -> list[Candidates]:
    """First-stage candidates per text under routing; texts are grouped by their `parsed` kind (one call
    each, the group's kinds passed on)."""
    groups: dict[str | None, list[int]] = {}
    for i, kind in enumerate(parsed):
        groups.setdefault(kind, []).append(i)
    out: list[Candidates | None] = [None] * len(texts)
    for kind, positions in groups.items():
        group = [texts[i] for i in positions]
        group_kinds = [kind] * len(group)
        if kind is None:
            found = candidates(group, depth, None, where, group_kinds)
        elif route == "hard":
            found = candidates(group, depth, None, without_kind(where, kind), group_kinds)
        else:
            mine = candidates(group, depth, None, without_kind(where, kind), group_kinds)
            every = candidates(group, depth, None, where, group_kinds)
            found = [
                soften(e, m, kinds, OTHER_KIND[kind], penalty).top(depth)
                for e, m in zip(every, mine, strict=True)
            ]
        for i, c in zip(positions, found, strict=True):
            out[i] = c
    return [c for c in out if c is not None]
