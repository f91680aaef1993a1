"""Search by example: an uploaded image, a gallery image ("more like this"), text, or a weighted mix.

Each embedding space of the engine (one for a single-model index, one per member of an ensemble) builds
its own query vector: the weighted sum of its unit-normalised encodings of the parts (clip-retrieval's
"text + image" mix), normalised again. A gallery image's part is its stored vector in that space, an
upload is encoded by that space's model with that model's image transform, text by its text tower.
Each space scores the allowed rows exactly; ensembles normalise each member's row and fuse with the
ensemble's weights, as text queries are fused. Re-ranking stages (ITM) take text, so they are not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from trafficsearch.errors import TrafficSearchError
from trafficsearch.search import fusion
from trafficsearch.search.cache import encode_queries
from trafficsearch.search.engine import Hit

_BLOCK = 65_536


@dataclass
class ExampleQuery:
    """Parts of one query, each with its weight (weights need not sum to 1)."""

    texts: list[tuple[str, float]] = field(default_factory=list)
    images: list[tuple[Image.Image, float]] = field(default_factory=list)
    ids: list[tuple[int, float]] = field(default_factory=list)
    embedding: np.ndarray | None = None  # a raw query vector (single-model indexes only)

    def empty(self) -> bool:
        return not (self.texts or self.images or self.ids) and self.embedding is None


@dataclass
class _Space:
    name: str
    model: Any
    vectors: Any  # [N, d] in the engine's reference row order


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def spaces(engine: Any) -> tuple[list[_Space], list[float], str | None]:
    """(spaces, fusion weights, normalisation or None for a single space) of a SearchEngine."""
    data = getattr(engine, "data", None)
    if data is None or not hasattr(data, "metadata"):
        raise TrafficSearchError("this engine cannot search by example (it has no stored image vectors)")
    first = getattr(engine, "first_stage", None)
    if not hasattr(first, "members"):  # one index (a FAISS first stage): one space
        return [_Space("model", engine.model, data.vectors)], [1.0], None
    out = []
    for member in first.members:
        vectors = getattr(member, "_vectors", None)
        if vectors is None or not hasattr(member, "model"):
            raise TrafficSearchError(
                f"ensemble member {getattr(member, 'name', '?')!r} has no image vectors; "
                "search by example needs embedding members"
            )
        out.append(_Space(member.name, member.model, vectors))
    return out, [float(w) for w in first.weights], first.normalization


def encode_images(model: Any, images: Sequence[Image.Image]) -> np.ndarray:
    """Unit query vectors of images, with the model's own preprocessing."""
    transform = model.image_transform()
    pixels = torch.stack([transform(image.convert("RGB")) for image in images])
    with torch.inference_mode():
        return _unit(model.encode_images(pixels).float().cpu().numpy())


def query_vector(space: _Space, query: ExampleQuery, row_of_id: Any) -> np.ndarray:
    parts: list[np.ndarray] = []
    weights: list[float] = []
    if query.texts:
        parts.extend(_unit(encode_queries(space.model, [t for t, _ in query.texts])))
        weights.extend(w for _, w in query.texts)
    if query.images:
        parts.extend(encode_images(space.model, [im for im, _ in query.images]))
        weights.extend(w for _, w in query.images)
    for image_id, w in query.ids:
        parts.append(_unit(np.asarray(space.vectors[row_of_id(image_id)], dtype=np.float32)))
        weights.append(w)
    if query.embedding is not None:
        vector = np.asarray(query.embedding, dtype=np.float32).reshape(-1)
        if vector.shape[0] != np.asarray(space.vectors[0]).shape[0]:
            raise TrafficSearchError(
                f"embedding has {vector.shape[0]} values, the index {np.asarray(space.vectors[0]).shape[0]}",
                field="embedding_input",
            )
        parts.append(_unit(vector))
        weights.append(1.0)
    total = np.zeros_like(parts[0], dtype=np.float32)
    for part, w in zip(parts, weights, strict=True):
        total += np.float32(w) * part.astype(np.float32)
    return _unit(total)


def _scores(vectors: Any, q: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    n = len(vectors) if rows is None else len(rows)
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, _BLOCK):
        idx = slice(start, start + _BLOCK) if rows is None else rows[start : start + _BLOCK]
        out[start : start + _BLOCK] = np.asarray(vectors[idx], dtype=np.float32) @ q
    return out


def search_example(
    engine: Any,
    query: ExampleQuery,
    k: int = 10,
    kind: str | None = None,
    where: dict[str, Any] | None = None,
) -> list[Hit]:
    """Top-k hits of one example query over a SearchEngine (single model or ensemble)."""
    if query.empty():
        raise TrafficSearchError("an example query needs text, an image, an image id or an embedding")
    if k < 1:
        raise TrafficSearchError(f"k must be at least 1, got {k}", field="k")
    found, weights, normalization = spaces(engine)
    if query.embedding is not None and len(found) > 1:
        raise TrafficSearchError(
            "embedding_input needs a single-model index (an ensemble has one space per member)",
            field="embedding_input",
        )
    meta = engine.data.metadata
    conditions = {**(where or {}), **({"kind": kind} if kind is not None else {})}
    rows = meta.rows_where(conditions) if conditions else None
    if rows is not None and len(rows) == 0:
        return []
    fused: np.ndarray | None = None
    for space, weight in zip(found, weights, strict=True):
        s = _scores(space.vectors, query_vector(space, query, meta.row_of_id), rows)
        if normalization is not None:
            s = fusion.normalize(s[None], normalization)[0]
        fused = np.float32(weight) * s if fused is None else fused + np.float32(weight) * s
    assert fused is not None
    all_rows = np.arange(len(fused)) if rows is None else rows
    order = np.lexsort((all_rows, -fused))[:k]
    return [
        Hit(int(meta.ids[r]), meta.names[r], float(fused[i]), str(meta.kinds[r]), meta.paths[r])
        for i, r in zip(order.tolist(), all_rows[order].tolist(), strict=True)
    ]


__all__ = ["ExampleQuery", "encode_images", "search_example", "spaces"]
