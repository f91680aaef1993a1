"""BLIP as a TrainTask: the seed's ITC + hard-negative ITM fine-tuning (train/blip_loss.py) in the loop.

The loop owns data, optimiser, schedule, precision, DDP and checkpoints; this module owns what is BLIP's:
- the model: `model.name` is a packaged BLIP config (blip-tiny, blip-small, blip-small-minilm, blip-large),
  a config JSON, a checkpoint dir of ours or a Hugging Face id / folder (offline); `model.pretrained` may
  name a checkpoint dir to start from (a previous stage's best);
- the loss: `blip_itc_itm_loss` over the GATHERED batch under DDP (the seed's `negative_all_rank`): features
  are gathered with gradients, hard negatives are drawn from the global batch. Positives are pairs of the
  same image (BLIP's image ids), plus those `loss.targets` names (same_text / equal / contain);
- training captions go through BLIP's `pre_caption` (queries at test time stay raw, as in the seed), and
  are tokenised to at most 100 tokens (the seed's max_length);
- partial fine-tuning: `model.lock_image` + `unlocked_image_groups` (last N ViT layers + post-norm train),
  `model.lock_text` + `unlocked_text_layers` (the BERT part; cross-attention and heads always train);
- the temperature is clamped to [0.001, 0.5] after every optimiser step, and gets no weight decay;
- with loss.queue_size > 0, the seed's momentum encoders, momentum distillation and ITC queue
  (train/blip_momentum.py); their state goes into the train state (`train_state` / `load_train_state`, in
  last/train_state.pt for resume), never into the exported checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trafficsearch.data.transforms import Preprocess
from trafficsearch.errors import ConfigError
from trafficsearch.models.bert_tokenizer import MAX_LENGTH, TokenBatch, pre_caption
from trafficsearch.models.blip import (
    MODEL_FILE,
    BlipRetrieval,
    create_blip,
    load_blip,
    lock_image,
    lock_text,
)
from trafficsearch.models.pretrained import resolve_if_package
from trafficsearch.train.blip_loss import blip_features, blip_itc_itm_loss
from trafficsearch.train.blip_momentum import MomentumDistiller
from trafficsearch.train.config import Config
from trafficsearch.train.contrastive import param_groups
from trafficsearch.train.dist import DistInfo
from trafficsearch.train.loss import gather_objects, gather_with_grad, pair_targets
from trafficsearch.train.task import Batch


def build_blip(cfg: Config, device: torch.device | str = "cpu") -> BlipRetrieval:
    """The model a BLIP run starts from: `model.pretrained` (a checkpoint dir, or `package:NAME`, one shipped
    with the package) or `model.name`."""
    pretrained = resolve_if_package(cfg.model.pretrained)
    if pretrained:
        if not (Path(pretrained) / MODEL_FILE).is_file():
            raise ConfigError(
                "for BLIP, model.pretrained is a checkpoint directory to start from (name packaged configs "
                "and Hugging Face ids in model.name)",
                path=pretrained,
                field="model.pretrained",
            )
        model = load_blip(pretrained)
    else:
        model = create_blip(cfg.model.name, seed=cfg.train.seed)
    if model.tokenizer.max_length > MAX_LENGTH:
        raise ConfigError(
            f"BLIP trains with captions of at most {MAX_LENGTH} tokens, the tokenizer allows "
            f"{model.tokenizer.max_length}",
            field="tokenizer.max_length",
        )
    if model.preprocess.kind != cfg.data.transform:  # the config's geometry wins, as for CLIP
        model.preprocess = Preprocess.from_dict({**model.preprocess.to_dict(), "kind": cfg.data.transform})
    return model.to(device)


class _Frozen:
    """`state_dict()` + `model_json()` fixed at one step, for a background checkpoint write."""

    def __init__(self, info: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
        self.info, self.state = info, state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state

    def model_json(self) -> dict[str, Any]:
        return self.info


class BlipTask:
    """TrainTask for BLIP (see the module docstring)."""

    def __init__(
        self,
        model: BlipRetrieval,
        targets: str = "one_to_one",
        frozen: list[nn.Module] | None = None,
        distiller: MomentumDistiller | None = None,
        itm_hard_share: float = 1.0,
    ) -> None:
        self.model = model
        self.itm_hard_share = itm_hard_share
        self.module: nn.Module = model
        self.targets = targets
        self.frozen = list(frozen or [])
        self.distiller = distiller

    @classmethod
    def create(cls, cfg: Config, device: torch.device | str) -> BlipTask:
        if cfg.loss.truncate_ratio > 0:
            raise ConfigError(
                "loss truncation is the seed's CLIP recipe; BLIP's loss has none (set it to 0)",
                field="loss.truncate_ratio",
            )
        model = build_blip(cfg, device)
        frozen: list[nn.Module] = []
        if cfg.model.lock_image:
            frozen += lock_image(model, cfg.model.unlocked_image_groups)
        if cfg.model.lock_text:
            frozen += lock_text(model, cfg.model.unlocked_text_layers)
        if cfg.train.grad_checkpointing:
            model.set_grad_checkpointing(True)
        distiller = None
        if cfg.loss.queue_size > 0:
            distiller = MomentumDistiller(
                cfg.loss.queue_size, cfg.loss.momentum, cfg.loss.alpha, model.embed_dim, seed=cfg.train.seed
            )
        return cls(model, cfg.loss.targets, frozen, distiller, cfg.loss.itm_hard_share)

    @property
    def preprocess(self) -> Preprocess:
        """The eval geometry + normalisation the loop applies to cached images (a hook the loop reads)."""
        return self.model.preprocess

    # -- TrainTask ------------------------------------------------------------------------------------------
    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """open_clip's rule (train/contrastive.py): no decay on the 0-dim temperature, biases and norms."""
        return param_groups(self.model, weight_decay)

    def train_mode(self) -> None:
        self.model.train()
        for module in self.frozen:  # frozen parts stay deterministic (no dropout)
            module.eval()
        if self.distiller is not None and self.distiller.encoders is not None:
            self.distiller.encoders.mirror_modes(self.model)

    def loss(self, batch: Batch, step: int, dist: DistInfo) -> dict[str, torch.Tensor]:
        """{'loss', 'itc', 'itm', 'temp'} of one local batch, contrasted with the global batch."""
        tok = self._tokens(batch.texts, dist)
        local = blip_features(self.model, batch.pixels, tok, batch.image_ids)
        world = local.gathered(lambda t: gather_with_grad(t, dist)) if dist.distributed else local
        positives = self._positives(batch, local.image_ids, world.image_ids, dist)
        momentum = None
        if self.distiller is not None:
            momentum = self.distiller.step_targets(
                self.model, batch.pixels, tok, local.image_ids, world.image_ids, positives, step, dist
            )
        out = blip_itc_itm_loss(
            self.model,
            None,
            None,
            None,
            features=local,
            world=world,
            positives=positives,
            momentum=momentum,
            itm_hard_share=self.itm_hard_share,
        )
        if momentum is not None:
            out["alpha"] = torch.tensor(momentum.alpha, dtype=torch.float64)  # logged as given
        return out

    def after_step(self) -> None:
        self.model.clamp_temperature()
        if self.distiller is not None:
            self.distiller.after_step()  # the EMA, once per optimiser step

    # -- optional loop hooks (train/task.py) ----------------------------------------------------------------
    def set_steps_per_epoch(self, steps: int) -> None:
        """Optimiser steps per epoch: the length of BLIP's alpha ramp."""
        if self.distiller is not None:
            self.distiller.steps_per_epoch = steps

    def train_state(self) -> dict[str, Any]:
        """What a resume needs beyond the weights: the momentum encoders and the queue."""
        return {} if self.distiller is None else {"momentum": self.distiller.state_dict()}

    def load_train_state(self, state: dict[str, Any]) -> None:
        if self.distiller is None:
            return
        if "momentum" not in state:
            raise ConfigError(
                "the checkpoint to resume holds no momentum encoders / queue", field="loss.queue_size"
            )
        self.distiller.load_state_dict(state["momentum"], self.model)

    def retrieval_model(self) -> BlipRetrieval:
        return self.model

    def save(self, path: Path, config_yaml: str | None) -> None:
        self.model.save(path, config_yaml, remember=False)

    def snapshot(self) -> Callable[[Path, str | None], None]:
        """The weights as they are now, on CPU, and a writer of them (train/checkpoints.py's background save):
        BlipRetrieval.save reads only `state_dict()` and `model_json()` with remember=False."""
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        view = _Frozen(self.model.model_json(), state)
        return lambda path, config_yaml: BlipRetrieval.save(view, path, config_yaml, remember=False)  # type: ignore[arg-type]

    def load_weights(self, path: Path) -> None:
        self.model.load_weights(path)

    # -- helpers --------------------------------------------------------------------------------------------
    def _tokens(self, texts: list[str], dist: DistInfo) -> TokenBatch:
        """BLIP's training-caption cleaning, then ids padded to the longest caption of the GLOBAL batch (all
        ranks must gather equal shapes; padding to 100 everywhere would triple the text cost)."""
        tok = self.model.tokenizer([pre_caption(t, MAX_LENGTH) for t in texts]).to(self.model.device)
        if not dist.distributed:
            return tok
        import torch.distributed as tdist

        length = torch.tensor([tok.input_ids.shape[1]], device=self.model.device)
        tdist.all_reduce(length, op=tdist.ReduceOp.MAX)
        extra = int(length.item()) - tok.input_ids.shape[1]
        if extra == 0:
            return tok
        pad_id = int(self.model.tokenizer.hf.pad_token_id)
        return TokenBatch(
            F.pad(tok.input_ids, (0, extra), value=pad_id),
            F.pad(tok.attention_mask, (0, extra), value=0),
            tok.enc_token_id,
        )

    def _positives(
        self, batch: Batch, local_ids: torch.Tensor, world_ids: torch.Tensor, dist: DistInfo
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image->text, text->image) bool masks [b, N] of the local rows against the global batch: the same
        image always (BLIP), plus the `loss.targets` rule over the pairs' captions / annotations."""
        same_image = local_ids[:, None] == world_ids[None, :]
        if self.targets in ("one_to_one", "same_image"):
            return same_image, same_image
        records = gather_objects(list(batch.records), dist) if self.targets in ("equal", "contain") else []
        texts = gather_objects(list(batch.texts), dist) if self.targets == "same_text" else []
        rule = pair_targets(self.targets, records, texts, world_ids.tolist(), device=world_ids.device)
        assert rule is not None
        b, start = len(local_ids), dist.rank * len(local_ids)  # ranks gather equal local batches in order
        i2t = rule[start : start + b]  # rows: images, columns: texts
        t2i = rule.T[start : start + b]  # rows: texts, columns: images
        return same_image | i2t, same_image | t2i
