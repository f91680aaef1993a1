"""The one interface indexing, search and the service code against, whatever model family is behind it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from trafficsearch.errors import ConfigError


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


OPEN_CLIP_PREFIX = "open_clip:"


def load_model(spec: str | Path, device: str | torch.device = "cpu") -> RetrievalModel:
    """Load a model from a training checkpoint dir or "open_clip:<name>[:<pretrained tag or path>]".

    Without a tag or path an open_clip model is randomly initialised (its HF text trunk, if any, still loads
    its own pretrained weights, e.g. the packaged MiniLM).
    """
    from trafficsearch.models.clip import OpenClipModel, create_clip

    text = str(spec)
    if text.startswith(OPEN_CLIP_PREFIX):
        rest = text[len(OPEN_CLIP_PREFIX) :]
        name, _, pretrained = rest.partition(":")
        if not name:
            raise ConfigError(f"model spec {text!r} names no model: use open_clip:<name>[:<tag or path>]")
        return create_clip(name, pretrained or None, device=device)
    path = Path(text)
    if path.is_dir():
        if _family(path) == "blip":
            from trafficsearch.models.blip import load_blip

            return load_blip(path, device=device)
        return OpenClipModel.from_checkpoint(path, device=device)
    raise ConfigError(
        "model spec is neither a checkpoint directory (with model.json) "
        "nor 'open_clip:<name>[:<tag or path>]'",
        path=text,
    )


def _family(directory: Path) -> str | None:
    """model.json's "family" ("blip" for BLIP checkpoints; CLIP ones predate the key), None if unreadable."""
    import json

    try:
        info = json.loads((directory / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info.get("family") if isinstance(info, dict) else None
