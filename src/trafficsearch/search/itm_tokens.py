"""Stored ITM image tokens (index/itm_tokens.py) for the re-rank stage, by the engine's gallery rows.

An ensemble's engine numbers rows as its reference (first) member does, while the re-ranker's tokens live in
the re-ranker's own member index, in that member's row order: rows are matched by image path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from trafficsearch.index.itm_tokens import load_itm_tokens


class StoredTokens:
    """ITM tokens of gallery rows read from a memory map (float32 tensors, as the ITM head takes them)."""

    def __init__(self, tokens: np.ndarray, rows: np.ndarray | None = None) -> None:
        self.tokens = tokens
        self.rows = rows  # engine row -> token row (None: the same order)

    def __len__(self) -> int:
        return len(self.tokens) if self.rows is None else len(self.rows)

    def get(self, rows: Sequence[int]) -> torch.Tensor:
        index = np.asarray(rows, dtype=np.int64)
        if self.rows is not None:
            index = self.rows[index]
        return torch.from_numpy(np.asarray(self.tokens[index], dtype=np.float32))


def find_stored_tokens(reference: Any, model: Any, others: Sequence[Any] = ()) -> StoredTokens | None:
    """Tokens that `model` wrote, from the engine's own index (`reference`) or one of `others` (IndexData of
    the ensemble's members) covering every reference image; None when there are none: encode on the fly."""
    for data in [reference, *others]:
        tokens = load_itm_tokens(data.dir, data.manifest, model)
        if tokens is None:
            continue
        if data is reference or data.dir == reference.dir:
            return StoredTokens(tokens)
        mine = {p: i for i, p in enumerate(data.metadata.paths)}
        try:
            rows = np.array([mine[p] for p in reference.metadata.paths], dtype=np.int64)
        except KeyError:  # a member over other images cannot serve this gallery
            continue
        return StoredTokens(tokens, rows)
    return None


def attach_stored_tokens(stages: Sequence[Any], reference: Any, others: Sequence[Any] = ()) -> None:
    """Give every token-taking re-rank stage the stored tokens of its model, where there are any."""
    for stage in stages:
        if getattr(stage, "uses_tokens", False):
            stage.stored = find_stored_tokens(reference, stage.model, others)
