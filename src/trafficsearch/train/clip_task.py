"""open_clip CLIP as a TrainTask: locks, the frozen-trunk text cache, the contrastive loss, the logit clamp.

What is CLIP-specific and nothing else: the loop (train/loop.py) owns data, optimiser, schedule, precision,
distribution and checkpoints. Partial fine-tuning follows open_clip's CLI:
`lock_image_tower(unlocked_groups=N)`
for the image tower (seed strategy B: N=5 opens the last 4 ViT-H blocks, ln_post and the projection) and
`lock_text` for the text trunk; with a fully frozen trunk, pooled text features are cached per caption.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from trafficsearch.data.transforms import Preprocess
from trafficsearch.models.base import RetrievalModel
from trafficsearch.models.clip import (
    OpenClipModel,
    create_clip,
    load_checkpoint,
    lock_text,
    save_checkpoint,
    text_project,
    text_projection_params,
    text_trunk_frozen,
    text_trunk_modules,
)
from trafficsearch.models.pretrained import resolve_if_package
from trafficsearch.train.config import Config
from trafficsearch.train.contrastive import param_groups
from trafficsearch.train.dist import DistInfo
from trafficsearch.train.loss import ContrastiveLoss
from trafficsearch.train.task import Batch
from trafficsearch.train.text_cache import TextFeatureCache

Advance = Callable[[str, int, int], Callable[[int], None]]  # (description, total, done) -> advance(n)


def build_clip(cfg: Config, device: torch.device) -> OpenClipModel:
    """The model of `cfg`: a checkpoint dir (fine-tuning a previous run / stage, or `package:NAME`, one
    shipped with the package), or open_clip by name."""
    pretrained = resolve_if_package(cfg.model.pretrained)
    if pretrained and Path(pretrained).is_dir():
        model = load_checkpoint(pretrained)
        model.preprocess = Preprocess.from_dict({**model.preprocess.to_dict(), "kind": cfg.data.transform})
    else:
        model = create_clip(cfg.model.name, pretrained, transform=cfg.data.transform)
    return model


class _CachedTexts(RetrievalModel):
    """The model as search sees it, with texts encoded through the cache (and pixels cast to the weights'
    dtype under pure bf16)."""

    def __init__(self, task: ClipTask) -> None:
        self.task, self.wrapped = task, task.wrapped
        self.name, self.embed_dim, self.image_size = (
            self.wrapped.name,
            self.wrapped.embed_dim,
            self.wrapped.image_size,
        )
        self.preprocess = self.wrapped.preprocess

    def image_transform(self):  # noqa: ANN201 - same as the wrapped model
        return self.wrapped.image_transform()

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.wrapped.encode_images(pixels.to(self.task.dtype))

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        model = self.task.module
        was = model.training
        model.eval()
        try:
            rows = [
                F.normalize(self.task.encode_texts(texts[i : i + 512]).float(), dim=-1)
                for i in range(0, len(texts), 512)
            ]
        finally:
            model.train(was)
        return torch.cat(rows) if rows else torch.empty(0, self.embed_dim)

    def manifest(self) -> dict[str, Any]:
        return self.wrapped.manifest()


class ClipTask:
    """TrainTask for open_clip models (see train/task.py)."""

    def __init__(self, wrapped: OpenClipModel, cfg: Config, device: torch.device) -> None:
        self.wrapped, self.cfg, self.device = wrapped, cfg, device
        self.module = wrapped.model
        self.module.to(device)
        wrapped.device = device
        if cfg.model.lock_image:
            self.module.lock_image_tower(
                unlocked_groups=cfg.model.unlocked_image_groups, freeze_bn_stats=False
            )
        if cfg.model.lock_text:
            lock_text(self.module, cfg.model.unlocked_text_layers)
        if cfg.train.grad_checkpointing:
            self.module.set_grad_checkpointing(True)
        self.trunk_frozen = text_trunk_frozen(self.module)
        self.cache = (
            TextFeatureCache(wrapped) if cfg.model.cache_text_features and self.trunk_frozen else None
        )
        self.cache_file = cfg.model.text_cache_file
        self.loss_fn = ContrastiveLoss(
            cfg.loss.targets, cfg.loss.truncate_ratio, cfg.loss.truncate_start_step
        )
        self.dtype = torch.float32

    @classmethod
    def create(cls, cfg: Config, device: torch.device) -> ClipTask:
        return cls(build_clip(cfg, device), cfg, device)

    # -- hooks the loop calls when present
    @property
    def preprocess(self) -> Preprocess:
        return self.wrapped.preprocess

    def to_pure_bf16(self) -> None:
        """The seed's strategy A: open_clip's `--precision bf16` casts Linear/Conv/attention weights and the
        projections to bf16 (norms and the logit scale stay fp32) and AdamW updates them in bf16."""
        from open_clip.model import convert_weights_to_lp

        convert_weights_to_lp(self.module, dtype=torch.bfloat16)
        self.dtype = torch.bfloat16

    def prepare(self, texts: Sequence[str], run_dir: Path, advance: Advance | None, is_main: bool) -> None:
        """Fill the frozen-trunk cache for every caption the run will see (kept in run_dir for resume)."""
        if self.cache is None:
            return
        cache_file = Path(self.cache_file) if self.cache_file else run_dir / "text_features.pt"
        self.cache.load(cache_file)
        unique = list(dict.fromkeys(texts))
        todo = [t for t in unique if t not in self.cache.index]
        step = (
            advance("encode captions (frozen trunk)", len(unique), len(unique) - len(todo))
            if advance
            else None
        )
        self.cache.add(todo, step)
        if todo and is_main:
            self.cache.save(cache_file)

    # -- TrainTask
    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return param_groups(self.module, weight_decay)

    def train_mode(self) -> None:
        self.module.train()
        if (
            self.trunk_frozen
        ):  # a frozen trunk stays deterministic (no dropout): cached == recomputed features
            for m in text_trunk_modules(self.module):
                m.eval()

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        if self.cache is not None:
            proj = text_projection_params(self.module)
            dtype = proj[0].dtype if proj else self.dtype
            return text_project(self.module, self.cache.rows(texts).to(self.device, dtype))
        return self.module.encode_text(self.wrapped.tokenize(texts).to(self.device))

    def loss(self, batch: Batch, step: int, dist: DistInfo) -> dict[str, torch.Tensor]:
        img = F.normalize(self.module.encode_image(batch.pixels.to(self.dtype)).float(), dim=-1)
        txt = F.normalize(self.encode_texts(batch.texts).float(), dim=-1)
        out = self.loss_fn(
            img,
            txt,
            self.module.logit_scale.float().exp(),
            step=step,
            dist=dist,
            records=batch.records,
            texts=batch.texts,
            image_ids=batch.image_ids,
        )
        out["logit_scale"] = self.module.logit_scale.detach().float().exp()
        return out

    @torch.no_grad()
    def after_step(self) -> None:
        self.module.logit_scale.clamp_(0, math.log(100))

    def retrieval_model(self) -> RetrievalModel:
        return _CachedTexts(self)

    def save(self, path: Path, config_yaml: str | None) -> None:
        save_checkpoint(path, self.wrapped, config_yaml)

    def snapshot(self) -> Callable[[Path, str | None], None]:
        """The weights as they are now, on CPU, and their writer (train/checkpoints.py background save)."""
        view = _Frozen(self.wrapped.model_json(), _state_on_cpu(self.module))
        return lambda path, config_yaml: save_checkpoint(path, view, config_yaml)  # type: ignore[arg-type]

    def load_weights(self, path: Path) -> None:
        from safetensors.torch import load_file

        self.module.load_state_dict(load_file(str(Path(path) / "weights.safetensors")), strict=True)


def _state_on_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class _Frozen:
    """What save_checkpoint reads of an OpenClipModel (`.model.state_dict()`, `.model_json()`), fixed at a
    point in training so a background thread can write it while training goes on."""

    def __init__(self, info: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
        self.info, self.model = info, self
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state

    def model_json(self) -> dict[str, Any]:
        return self.info
