"""Per-epoch validation with the official metric: rank the val gallery for every val caption, top-10.

Family-agnostic: it sees the model as search does (a RetrievalModel), plus the uint8 val squares and
the preprocessing that normalises them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from trafficsearch.data.records import Record
from trafficsearch.data.transforms import Preprocess, normalize_uint8
from trafficsearch.eval.metrics import RULES, evaluate
from trafficsearch.models.base import RetrievalModel


@torch.no_grad()
def encode_gallery(
    model: RetrievalModel, pixels_u8: torch.Tensor, pre: Preprocess, batch: int = 256
) -> torch.Tensor:
    rows = [
        model.encode_images(normalize_uint8(pixels_u8[i : i + batch], pre)).cpu()
        for i in range(0, len(pixels_u8), batch)
    ]
    return torch.cat(rows) if rows else torch.empty(0, model.embed_dim)


@torch.no_grad()
def rank_top_k(
    text_emb: torch.Tensor, image_emb: torch.Tensor, k: int = 10, chunk: int = 1024
) -> torch.Tensor:
    """Indices of the k most similar gallery images per text row (cosine similarity, features normalised)."""
    k = min(k, image_emb.shape[0])
    out = [
        (text_emb[i : i + chunk] @ image_emb.T).topk(k, dim=1).indices for i in range(0, len(text_emb), chunk)
    ]
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)


def validate(
    model: RetrievalModel,
    records: Sequence[Record],
    pixels_u8: torch.Tensor,
    pre: Preprocess,
    encode_texts: Callable[[Sequence[str]], torch.Tensor] | None = None,
    k: int = 10,
) -> dict[str, Any]:
    """Every val line is a query against the whole val gallery; returns both rules' results as dicts."""
    image_emb = encode_gallery(model, pixels_u8, pre)
    unique = list(dict.fromkeys(r.text for r in records))
    text_emb = (encode_texts or model.encode_texts)(unique).float().cpu()
    top = rank_top_k(text_emb, image_emb, k)
    row = {t: i for i, t in enumerate(unique)}
    names = [r.image for r in records]
    ranked = [[names[j] for j in top[row[r.text]].tolist()] for r in records]
    return {rule: evaluate(records, records, ranked, rule=rule, k=k).to_dict() for rule in RULES}
