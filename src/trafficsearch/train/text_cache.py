"""Pooled features of a frozen text trunk, computed once per unique text.

Why: with the MiniLM trunk locked, its output for a caption never changes, and captions repeat across
images and epochs; running the 6-layer trunk every step would dominate CPU training time. Only the text
projection (and the image tower) then train, on rows looked up here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from trafficsearch.ioutil import atomic_open
from trafficsearch.models.clip import (
    OpenClipModel,
    text_pooled,
    text_trunk_frozen,
    text_trunk_modules,
    text_trunk_params,
    trim_padding,
)


class TextFeatureCache:
    def __init__(self, model: OpenClipModel, batch_size: int = 256) -> None:
        if not text_trunk_frozen(model.model):
            raise ValueError("the text feature cache needs a fully frozen text trunk")
        self.model = model
        self.batch_size = batch_size
        self.index: dict[str, int] = {}
        self.chunks: list[torch.Tensor] = []
        self._features: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.index)

    @torch.no_grad()
    def add(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> None:
        """Compute features for the texts not cached yet (trunk in eval mode: deterministic, no dropout)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self.index))
        if not missing:
            return
        # batches of similar length waste little on padding (HF trunks are trimmed to the longest text)
        missing.sort(key=len)
        modules = text_trunk_modules(self.model.model)
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                tokens = trim_padding(self.model.model, self.model.tokenize(chunk)).to(self.model.device)
                feats = text_pooled(self.model.model, tokens).float().cpu()
                for text in chunk:
                    self.index[text] = len(self.index)
                self.chunks.append(feats)
                if progress is not None:
                    progress(len(chunk))
        finally:
            for m, mode in zip(modules, modes, strict=True):
                m.train(mode)
        self._features = None

    @property
    def features(self) -> torch.Tensor:
        if self._features is None:
            self._features = torch.cat(self.chunks) if self.chunks else torch.empty(0)
            self.chunks = [self._features]
        return self._features

    def trunk_digest(self) -> str:
        """Identifies the trunk weights (and model name) the features came from."""
        digest = hashlib.sha256(self.model.name.encode())
        for p in text_trunk_params(self.model.model):
            digest.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def save(self, path: str | Path) -> None:
        """Keep the features beside the run, so a resumed run does not re-encode every caption."""
        with atomic_open(path, "wb") as handle:
            texts = sorted(self.index, key=self.index.__getitem__)
            torch.save({"digest": self.trunk_digest(), "texts": texts, "features": self.features}, handle)

    def load(self, path: str | Path) -> int:
        """Adopt features saved by `save` for the same trunk; returns how many (0 if absent or stale)."""
        path = Path(path)
        if not path.is_file():
            return 0
        data = torch.load(path, map_location="cpu", weights_only=True)
        if data.get("digest") != self.trunk_digest():
            return 0
        self.index = {t: i for i, t in enumerate(data["texts"])}
        self.chunks, self._features = [data["features"]], None
        return len(self.index)

    def rows(self, texts: Sequence[str]) -> torch.Tensor:
        """Pooled features for `texts` (all must have been added), on the CPU."""
        self.add(texts)
        return self.features[[self.index[t] for t in texts]]
