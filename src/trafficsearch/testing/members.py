"""Fusion members for tests: deterministic noise, the member a weight fit should switch off."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trafficsearch.search.ensemble import Member


class NoiseMember(Member):
    """A row scorer (no embeddings): seeded by the texts' lengths, scaled x10 so it swamps a fused member."""

    name = "noise"

    def bind(self, reference: object) -> None:
        self.n = reference.count  # type: ignore[attr-defined]

    def scores(self, texts: Sequence[str], rows: np.ndarray | None) -> np.ndarray:
        rng = np.random.default_rng([len(t) for t in texts])
        full = rng.normal(size=(len(texts), self.n)).astype(np.float32) * 10
        return full if rows is None else full[:, rows]
