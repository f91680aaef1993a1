"""The interfaces indexing, search and the service code against, whatever model family is behind them.

Only interfaces live here: the families (models/clip.py, blip.py, attributes.py) implement them and register
their loaders with models/family.py; models/factory.py `load_model` is the one way to get a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image


class RetrievalModel:
    """A text-image embedding model: both encoders return L2-normalised float32 rows in one space."""

    name: str
    embed_dim: int
    image_size: int

    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """Eval preprocessing: PIL image -> float32 [3,S,S]."""
        raise NotImplementedError

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B,3,S,S] preprocessed pixels -> [B,D] float32, L2-normalised (no grad)."""
        raise NotImplementedError

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """N texts -> [N,D] float32, L2-normalised (batched, no grad)."""
        raise NotImplementedError

    def manifest(self) -> dict[str, Any]:
        """Model name, checkpoint path + sha256 of its weights, preprocessing: what an index records."""
        raise NotImplementedError


@runtime_checkable
class ItmScorer(Protocol):
    """The re-ranking capability: an image-text matching head (BlipRetrieval has one). Re-rankers are chosen
    by this capability, never by a member's name."""

    def image_transform(self) -> Callable[[Any], torch.Tensor]: ...

    def itm_scores(
        self,
        texts: Sequence[str],
        pixels: torch.Tensor,
        *,
        batch_size: int = 128,
        probabilities: bool = False,
    ) -> torch.Tensor: ...


def can_rerank(model: Any) -> bool:
    """True when `model` has an ITM head (see ItmScorer)."""
    return isinstance(model, ItmScorer)
