"""BLIP's momentum encoders, momentum distillation and ITC queue (loss.queue_size / momentum / alpha), as in
BLIP's retrieval fine-tuning (the seed: 57,600 entries, momentum 0.995, alpha 0.4 ramped over epoch 1).

Why: the queue gives ITC 57,600 negatives (and positives: earlier captions of the same image) beyond the
batch of 96, and the slowly moving momentum model supplies both those queue features and soft targets that
soften the one-hot positives of noisy pairs.

- `MomentumEncoders`: a frozen copy of the model whose trainable weights follow an EMA of the online ones
  (`param_m = m * param_m + (1 - m) * param`), once per optimiser step; frozen weights stay equal to the
  online ones. Its sub-modules mirror the online train/eval modes (dropout as BLIP's `_m` encoders).
- `FeatureQueue`: normalised momentum features + image ids + a pointer; `enqueue` writes the GATHERED batch
  (all ranks, rank order) at the pointer and wraps, so a queue size that the global batch does not divide
  (BLIP asserts it does) and batches larger than the queue are fine. Starts as random unit vectors with ids
  that match nothing, as BLIP's.
- `MomentumDistiller.step_targets`: per loss call, the momentum features of the local batch, their gather
  (no grad), the `DistillTargets` of train/blip_loss.py, then the batch enqueued (after the targets, as BLIP
  dequeues after its ITC).

Differences from BLIP, on purpose: the in-batch columns are the gathered (global) batch's momentum features,
not the rank's own (so N ranks train as one process does, as the online ITC here already is); the EMA runs
after each optimiser step rather than before the next forward (the same sequence of weights; with gradient
accumulation, once per step); the state lives in the train state (last/train_state.pt), never in the
exported checkpoint, so a stage starts a fresh copy and queue from the previous stage's best.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from trafficsearch.models.bert_tokenizer import TokenBatch
from trafficsearch.models.blip import BlipRetrieval
from trafficsearch.train.blip_loss import DistillTargets
from trafficsearch.train.dist import DistInfo, all_gather_cat

EMPTY_ID = torch.iinfo(torch.int64).min  # the id of a never-written queue slot: positive of nothing


class MomentumEncoders:
    """An EMA copy of a BlipRetrieval (ITC encoders and projections; the copy of the ITM head is unused)."""

    def __init__(self, model: BlipRetrieval) -> None:
        # the tokenizer is shared, not copied; the copy never needs gradients or their checkpointing
        self.model: BlipRetrieval = copy.deepcopy(model, memo={id(model.tokenizer): model.tokenizer})
        if any(getattr(m, "gradient_checkpointing", False) is True for m in self.model.hf.modules()):
            self.model.set_grad_checkpointing(False)
        self.model.requires_grad_(False)
        online = dict(model.named_parameters())
        shadow = dict(self.model.named_parameters())
        names = [n for n, p in online.items() if p.requires_grad and _encoder_param(n)]
        self._online = [online[n] for n in names]
        self._shadow = [shadow[n] for n in names]

    @torch.no_grad()
    def update(self, momentum: float) -> None:
        """param_m = m * param_m + (1 - m) * param over the trainable encoder weights."""
        if not self._shadow:
            return
        torch._foreach_mul_(self._shadow, momentum)
        torch._foreach_add_(self._shadow, self._online, alpha=1.0 - momentum)

    def mirror_modes(self, model: BlipRetrieval) -> None:
        """Every sub-module of the copy in the train/eval mode of its online twin."""
        for online, shadow in zip(model.modules(), self.model.modules(), strict=True):
            shadow.training = online.training

    @torch.no_grad()
    def features(self, pixels: torch.Tensor, tok: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(image [B,D], text [B,D]) normalised ITC features of the momentum model."""
        m = self.model
        image = m.image_features(m.image_tokens(pixels.to(m.device)))
        return image, m.text_features(tok.input_ids, tok.attention_mask)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state, strict=True)


def _encoder_param(name: str) -> bool:
    """BLIP's model pairs: visual encoder, vision_proj, text encoder, text_proj (not ITM head, not temp)."""
    return name.startswith(("hf.vision_model.", "hf.vision_proj.", "hf.text_encoder.", "hf.text_proj."))


class FeatureQueue:
    """A ring of `size` (image feature, text feature, image id) rows and the pointer to the oldest one (a
    Python int: no host sync per step)."""

    def __init__(self, size: int, dim: int, seed: int = 0) -> None:
        if size <= 0:
            raise ValueError("a queue needs size > 0")
        gen = torch.Generator().manual_seed(seed)  # the global RNG stream is left as it was
        self.image = F.normalize(torch.randn(size, dim, generator=gen), dim=1)
        self.text = F.normalize(torch.randn(size, dim, generator=gen), dim=1)
        self.ids = torch.full((size,), EMPTY_ID, dtype=torch.long)
        self.ptr = 0
        self.size = size

    def to(self, device: torch.device | str) -> FeatureQueue:
        self.image, self.text, self.ids = (t.to(device) for t in (self.image, self.text, self.ids))
        return self

    @torch.no_grad()
    def enqueue(self, image: torch.Tensor, text: torch.Tensor, ids: torch.Tensor) -> None:
        """Overwrite the oldest rows with these (the gathered batch), wrapping at the end; of a batch larger
        than the queue only its last `size` rows stay."""
        n = int(image.shape[0])
        keep = min(n, self.size)
        start = (self.ptr + n - keep) % self.size
        slots = (start + torch.arange(keep, device=self.ids.device)) % self.size
        self.image[slots] = image[n - keep :].to(self.image.dtype)
        self.text[slots] = text[n - keep :].to(self.text.dtype)
        self.ids[slots] = ids[n - keep :].to(self.ids.device, torch.long)
        self.ptr = (self.ptr + n) % self.size

    def state_dict(self) -> dict[str, Any]:
        return {"image": self.image, "text": self.text, "ids": self.ids, "ptr": self.ptr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["image"].shape) != tuple(self.image.shape):
            got, want = tuple(state["image"].shape), tuple(self.image.shape)
            raise ValueError(f"queue of shape {got}, expected {want}")
        device = self.ids.device
        self.image = state["image"].to(device, self.image.dtype, copy=True)
        self.text = state["text"].to(device, self.text.dtype, copy=True)
        self.ids = state["ids"].to(device, torch.long, copy=True)
        self.ptr = int(state["ptr"])


class MomentumDistiller:
    """The MoD + queue state of one BLIP run (see the module docstring)."""

    def __init__(self, queue_size: int, momentum: float, alpha: float, dim: int, seed: int = 0) -> None:
        self.momentum, self.alpha = float(momentum), float(alpha)
        self.queue = FeatureQueue(queue_size, dim, seed)
        self.encoders: MomentumEncoders | None = None
        self.steps_per_epoch: int | None = None

    def start(self, model: BlipRetrieval) -> MomentumEncoders:
        """Copy the online model (once: lazily, after the loop's rank-0 broadcast and pure_bf16 cast)."""
        if self.encoders is None:
            self.encoders = MomentumEncoders(model)
            self.queue.to(model.device)
        return self.encoders

    def alpha_at(self, step: int) -> float:
        """BLIP's ramp: alpha * min(1, step / steps per epoch) during the first epoch, then alpha (alpha
        throughout when the loop never set the epoch length)."""
        if not self.steps_per_epoch:
            return self.alpha
        return self.alpha * min(1.0, step / self.steps_per_epoch)

    def after_step(self) -> None:
        if self.encoders is not None:
            self.encoders.update(self.momentum)

    def step_targets(
        self,
        model: BlipRetrieval,
        pixels: torch.Tensor,
        tok: TokenBatch,
        local_ids: torch.Tensor,
        world_ids: torch.Tensor,
        positives: tuple[torch.Tensor, torch.Tensor],
        step: int,
        dist: DistInfo,
    ) -> DistillTargets:
        """The DistillTargets of one (local) batch against the gathered batch + queue, then enqueue the
        gathered batch. `positives`: the in-batch masks [b,N]; the queue's positives are same image ids."""
        encoders = self.start(model)
        image_m, text_m = encoders.features(pixels, tok)
        world_image_m, world_text_m = all_gather_cat(image_m, dist), all_gather_cat(text_m, dist)
        q = self.queue
        queue_pos = local_ids.to(q.ids.device)[:, None] == q.ids[None, :]
        bank = DistillTargets(
            image_feat_m=image_m,
            text_feat_m=text_m,
            image_all=torch.cat([world_image_m, q.image.to(world_image_m.dtype)]),
            text_all=torch.cat([world_text_m, q.text.to(world_text_m.dtype)]),
            pos_i2t=torch.cat([positives[0], queue_pos], dim=1),
            pos_t2i=torch.cat([positives[1], queue_pos], dim=1),
            alpha=self.alpha_at(step),
        )
        q.enqueue(world_image_m, world_text_m, world_ids)
        return bank

    # -- train state (last/train_state.pt) ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "encoders": None if self.encoders is None else self.encoders.state_dict(),
            "queue": self.queue.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], model: BlipRetrieval) -> None:
        self.queue.load_state_dict(state["queue"])
        if state.get("encoders") is not None:
            self.start(model).load_state_dict(state["encoders"])
        self.queue.to(model.device)
