"""Candidate stages: what happens between the first-stage similarity search and the final top-k.

The engine fetches `depth` candidates per query, then passes them through its stages in order. Fusion of
several models replaces the first stage itself (`FirstStage`, search/ensemble/fused.py); ITM re-ranking is a
rerank stage (search/rerank.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass
class Candidates:
    """One query's candidates: index rows and their scores, best first."""

    rows: np.ndarray  # int64
    scores: np.ndarray  # float32

    def top(self, k: int) -> Candidates:
        return Candidates(self.rows[:k], self.scores[:k])


class Stage(Protocol):
    """Re-scores/re-orders candidates; `depth` is how many first-stage candidates it wants to see."""

    depth: int

    def __call__(self, texts: Sequence[str], candidates: list[Candidates]) -> list[Candidates]: ...


class FirstStage(Protocol):
    """Produces each text's top-`depth` candidates over the allowed rows (None: the whole gallery);
    `kinds` are the texts' parsed kinds (None: not parsed by the caller), `where` the conditions the rows
    came from (kind included; for vector stores that filter themselves, e.g. Milvus)."""

    def search(
        self,
        texts: Sequence[str],
        depth: int,
        rows: np.ndarray | None,
        kinds: Sequence[str | None] | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[Candidates]: ...


def sort_candidates(rows: np.ndarray, scores: np.ndarray) -> Candidates:
    """Rows by descending score; ties keep their input order (a stable sort)."""
    order = np.argsort(-scores, kind="stable")
    return Candidates(rows[order], scores[order])
