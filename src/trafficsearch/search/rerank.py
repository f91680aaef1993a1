"""ITM re-ranking: BLIP's image-text matching head re-scores the fused top K (a rerank Stage).

Combination forms (`form`):
- `seed`: the README's intended form (seed-recipe.md section 7): the raw match logits `itm_head[:,1]` of the K
  candidates are L2-normalised across the K and added to the fused score with weight `b` (the seed: 1:1;
  search/ensemble/rerank_fit.py fits `b` on a labelled split). The shipped
  `cvpr23_infer.py` never runs it: `rank` is overwritten by `utils.get_rank()` (0 outside DDP), so it
  re-ranks the top-0 and submits the fusion alone; `rerank=False` here reproduces that submission.
- `itm_prob`: the ITM probability P(match) alone orders the K;
- `weighted`: a * fused + b * raw ITM logit.

Beyond K: the seed re-sorts the whole row, so a candidate with a negative logit (final score below 0) falls
below the fused ranks 11+ (about +0.01) and those re-enter the top 10 without ever being checked by ITM.
We choose `merge="block"` by default: the K re-ranked candidates stay ahead of the rest, which keep their
fused order (ITM only reorders what it has seen). `merge="resort"` reproduces the seed. Scores after the
block are the fused scores, so with `block` the order, not the score, is authoritative across the cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trafficsearch.errors import ConfigError
from trafficsearch.index.images import SkipImage, load_rgb
from trafficsearch.models import onnx_text
from trafficsearch.models.base import ItmScorer
from trafficsearch.models.device import inference_precision
from trafficsearch.search.cache import LRU
from trafficsearch.search.stages import Candidates, sort_candidates

FORMS = ("seed", "itm_prob", "weighted")
MERGES = ("block", "resort")


def check_form(form: str, merge: str = "block") -> None:
    if form not in FORMS:
        raise ConfigError(f"unknown rerank form {form!r}; expected one of {', '.join(FORMS)}", field="form")
    if merge not in MERGES:
        raise ConfigError(f"unknown merge {merge!r}; expected one of {', '.join(MERGES)}", field="merge")


def combine(fused: np.ndarray, itm: np.ndarray, form: str, a: float = 1.0, b: float = 1.0) -> np.ndarray:
    """New scores of K candidates from fused scores and ITM outputs (logits; probabilities for itm_prob)."""
    check_form(form)
    fused = np.asarray(fused, dtype=np.float32)
    itm = np.asarray(itm, dtype=np.float32)
    if form == "seed":
        return fused + np.float32(b) * itm / max(float(np.linalg.norm(itm)), 1e-12)
    if form == "itm_prob":
        return itm
    return np.float32(a) * fused + np.float32(b) * itm


def merge_reranked(candidates: Candidates, new_scores: np.ndarray, merge: str = "block") -> Candidates:
    """Put the re-scored head (len(new_scores) first candidates) back in front of the untouched tail."""
    k = len(new_scores)
    head_rows = candidates.rows[:k]
    if merge == "resort":
        return sort_candidates(
            candidates.rows, np.concatenate([new_scores, candidates.scores[k:]]).astype(np.float32)
        )
    order = np.argsort(-new_scores, kind="stable")
    return Candidates(
        np.concatenate([head_rows[order], candidates.rows[k:]]),
        np.concatenate([new_scores[order], candidates.scores[k:]]).astype(np.float32),
    )


class PixelCache(LRU[int, torch.Tensor]):
    """What the scorer needs per candidate image (pixels, or ViT tokens), by gallery row (LRU): repeated
    queries re-rank the same few images."""


class ItmRerankStage:
    """Re-score each query's top `k` candidates with an ITM scorer (runs when the engine's rerank=True).

    `data` is the engine's IndexData: candidate rows are turned into gallery images with the model's eval
    transform (an image that can no longer be decoded scores as blank pixels instead of failing the query).
    """

    def __init__(
        self,
        model: ItmScorer,
        data: Any,
        *,
        k: int = 10,
        form: str = "seed",
        a: float = 1.0,
        b: float = 1.0,
        merge: str = "block",
        batch_size: int = 128,
        cache_size: int = 4096,
    ) -> None:
        check_form(form, merge)
        if k < 1:
            raise ConfigError(f"rerank k must be at least 1, got {k}", field="rerank.k")
        self.model, self.data = model, data
        self.depth = self.k = int(k)
        self.form, self.a, self.b, self.merge = form, float(a), float(b), merge
        self.batch_size = batch_size
        self._transform = model.image_transform()
        # a scorer that takes ViT tokens (BlipRetrieval) gets them cached per image; others get pixels
        self.uses_tokens = hasattr(model, "itm_image_tokens") and hasattr(model, "itm_scores_tokens")
        self.pixels = PixelCache(self._load_features, cache_size)
        # stored ITM tokens (search/itm_tokens.py), read instead of decoding + encoding the candidates
        self.stored: Any = None
        if self.uses_tokens and data is not None and hasattr(data, "manifest"):
            from trafficsearch.search.itm_tokens import find_stored_tokens

            self.stored = find_stored_tokens(data, model)
        self.chunk = max(1, cache_size // (2 * self.k))  # queries per pass: their candidates stay cached

    def _load_features(self, row: int) -> torch.Tensor:
        pixels = self._load_row(row)
        return self.model.itm_image_tokens(pixels[None])[0] if self.uses_tokens else pixels

    def _features(self, rows: list[int]) -> torch.Tensor:
        """Stacked cached inputs for `rows`; missing images are decoded and (tokens) encoded in one batch."""
        if self.stored is not None:
            return self.stored.get(rows)
        missing = [r for r in dict.fromkeys(rows) if r not in self.pixels]
        if missing and self.uses_tokens:
            tokens = self.model.itm_image_tokens(torch.stack([self._load_row(r) for r in missing]))
            for row, value in zip(missing, tokens, strict=True):
                self.pixels.put(row, value)
        return torch.stack([self.pixels.get(r) for r in rows])

    def _load_row(self, row: int) -> torch.Tensor:
        path = Path(self.data.gallery_root) / self.data.metadata.paths[row]
        try:
            image, _, _ = load_rgb(path)
        except SkipImage:
            from PIL import Image

            image = Image.new("RGB", (8, 8))
        return self._transform(image)

    def __call__(self, texts: Sequence[str], candidates: list[Candidates]) -> list[Candidates]:
        """Re-rank every query's head; repeated (text, head) pairs are scored once (query files repeat)."""
        return self._each_unique(texts, candidates, self._rerank)

    def outputs(self, texts: Sequence[str], candidates: list[Candidates]) -> list[np.ndarray]:
        """The ITM outputs (logits; probabilities for itm_prob) of each query's top `k` candidates, in their
        order: what `__call__` combines with the fused scores (rerank_fit.py fits the combination on them)."""
        return self._each_unique(texts, candidates, self._itm)

    def _each_unique(self, texts: Sequence[str], candidates: list[Candidates], work: Any) -> list[Any]:
        """`work` over each unique (text, head) once, `chunk` queries a pass; results in input order."""
        keys = [(t, c.rows[: self.k].tobytes()) for t, c in zip(texts, candidates, strict=True)]
        unique = list({key: i for i, key in reversed(list(enumerate(keys)))}.items())  # first position
        done: dict[tuple[str, bytes], Any] = {}
        with inference_precision(getattr(self.model, "device", "cpu")):  # autocast on a GPU, fp32 on CPU
            for start in range(0, len(unique), self.chunk):
                done.update(work(unique[start : start + self.chunk], candidates))
        return [done[key] for key in keys]

    def _rerank(
        self, unique: list[tuple[tuple[str, bytes], int]], candidates: list[Candidates]
    ) -> dict[tuple[str, bytes], Candidates]:
        outputs = self._itm(unique, candidates)
        return {key: self.rescored(candidates[i], outputs[key]) for key, i in unique}

    def rescored(self, cand: Candidates, outputs: np.ndarray, b: float | None = None) -> Candidates:
        """`cand` with its head re-scored from its ITM `outputs` (this stage's form, a and merge; `b`, when
        given, in place of the stage's: rerank_fit.py tries several on one set of outputs)."""
        if len(outputs) == 0:
            return cand
        weight = self.b if b is None else b
        new = combine(cand.scores[: len(outputs)], outputs, self.form, self.a, weight)
        return merge_reranked(cand, new, self.merge)

    def _itm(
        self, unique: list[tuple[tuple[str, bytes], int]], candidates: list[Candidates]
    ) -> dict[tuple[str, bytes], np.ndarray]:
        """ITM outputs of each unique (text, head)'s first `k` candidates, scored in one batch."""
        pairs_text: list[str] = []
        rows: list[int] = []
        for key, i in unique:
            for row in candidates[i].rows[: self.k].tolist():
                pairs_text.append(key[0])
                rows.append(int(row))
        if not pairs_text:
            return {key: np.empty(0, np.float32) for key, _ in unique}
        features = self._features(rows)
        probabilities = self.form == "itm_prob"
        fast = onnx_text.itm_head(self.model) if self.uses_tokens else None  # opt-in ONNX head
        if fast is not None:
            itm = fast(pairs_text, features, probabilities=probabilities, batch_size=self.batch_size)
        elif self.uses_tokens:
            itm = self.model.itm_scores_tokens(  # type: ignore[attr-defined]
                pairs_text, features, batch_size=self.batch_size, probabilities=probabilities
            )
        else:
            itm = self.model.itm_scores(
                pairs_text, features, batch_size=self.batch_size, probabilities=probabilities
            )
        itm_np = np.asarray(itm.detach().float().cpu().numpy(), dtype=np.float32)
        out: dict[tuple[str, bytes], np.ndarray] = {}
        start = 0
        for key, i in unique:
            n = min(self.k, len(candidates[i].rows))
            out[key], start = itm_np[start : start + n], start + n
        return out
