"""Contrastive losses: CLIP InfoNCE (open_clip's ClipLoss) and a multi-positive variant.

Why multi-positive: captions repeat ("This is a white Audi." labels many images), so plain InfoNCE pushes
apart an image and an identical caption that happens to sit elsewhere in the batch. The multi-positive
loss spreads each row's target over every batch item with the same text.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from torch import nn

LOSS_KINDS = ("clip", "multi_positive")


class ContrastiveLoss(nn.Module):
    def __init__(self, kind: str = "clip", rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        if kind not in LOSS_KINDS:
            raise ValueError(f"unknown loss {kind!r}; expected one of {LOSS_KINDS}")
        if kind == "multi_positive" and world_size > 1:
            raise ValueError("multi_positive loss is single-process only for now")
        self.kind = kind
        self.clip = ClipLoss(rank=rank, world_size=world_size, gather_with_grad=world_size > 1)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        texts: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """Features are L2-normalised [B,D]; `logit_scale` is already exponentiated."""
        if self.kind == "clip" or texts is None:
            return self.clip(image_features, text_features, logit_scale)
        return multi_positive_loss(image_features, text_features, logit_scale, texts)


def multi_positive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor, texts: Sequence[str]
) -> torch.Tensor:
    ids: dict[str, int] = {}
    labels = torch.tensor([ids.setdefault(t, len(ids)) for t in texts], device=image_features.device)
    target = (labels[:, None] == labels[None, :]).float()
    target = target / target.sum(dim=1, keepdim=True)
    logits = logit_scale * image_features @ text_features.T
    loss_i = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss_t = -(target * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (loss_i + loss_t) / 2
