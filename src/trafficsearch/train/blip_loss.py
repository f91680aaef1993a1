"""BLIP's training loss (the seed's ITC + hard-negative ITM), beside its task (train/blip_task.py).

What one step does (the loop owns the optimiser; models/blip.py owns the model):
    out = blip_itc_itm_loss(model, pixels, texts, image_ids, attribute_keys, many_to_many=...)
    out["loss"].backward()                            # out also holds "itc", "itm", "temp" (for logging)
Under DDP (the seed's `negative_all_rank`), gather outside and pass the result in:
    local = blip_features(model, pixels, texts, image_ids, attribute_keys, pad_to_max_length=True)
    world = local.gathered(gather_with_grad)          # train/loss.py's gather: concat over ranks
    out = blip_itc_itm_loss(model, None, None, None, features=local, world=world, many_to_many=...)
The temperature is clamped to [0.001, 0.5] in place at every call, as BLIP does.
Momentum distillation + the ITC queue (BLIP's retrieval fine-tuning, loss.queue_size > 0): pass
`momentum=` a `DistillTargets` (train/blip_momentum.py builds it: momentum features of the gathered batch,
then the queue); ITC then contrasts the online features against those columns with targets
alpha * softmax(momentum sims) + (1 - alpha) * positives / row count (`distilled_itc`). ITM hard negatives
stay in the gathered batch, drawn from the online features' similarities, as BLIP draws them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from trafficsearch.errors import ConfigError
from trafficsearch.models.bert_tokenizer import TokenBatch
from trafficsearch.models.blip import BlipRetrieval


def as_id_tensor(values: torch.Tensor | Sequence[Any], device: torch.device | str = "cpu") -> torch.Tensor:
    """Ids of any hashable kind -> int64 [B]; strings hash stably (blake2b) so every rank maps them alike."""
    if isinstance(values, torch.Tensor):
        return values.to(device=device, dtype=torch.long).reshape(-1)
    out = []
    for v in values:
        if isinstance(v, int):
            out.append(v)
        else:
            digest = hashlib.blake2b(str(v).encode("utf-8"), digest_size=8).digest()
            out.append(int.from_bytes(digest, "little", signed=True))
    return torch.tensor(out, dtype=torch.long, device=device)


@dataclass
class BlipFeatures:
    """One batch's differentiable features + ids; the unit DDP gathers (field-wise concat over ranks)."""

    image_tokens: torch.Tensor  # [B,T,W] ViT tokens, for ITM
    image_feat: torch.Tensor  # [B,D] normalised ITC embedding
    text_feat: torch.Tensor  # [B,D]
    input_ids: torch.Tensor  # [B,L] `[CLS]`-led
    attention_mask: torch.Tensor  # [B,L]
    image_ids: torch.Tensor  # [B] int64
    attr_ids: torch.Tensor | None = None  # [B] int64

    def __len__(self) -> int:
        return int(self.image_feat.shape[0])

    def gathered(self, gather: Callable[[torch.Tensor], torch.Tensor]) -> BlipFeatures:
        """Apply a concat-over-ranks `gather` (with grad for float tensors) to every field."""
        kwargs = {f.name: getattr(self, f.name) for f in fields(self)}
        return BlipFeatures(**{k: (gather(v) if v is not None else None) for k, v in kwargs.items()})


def _token_batch(model: BlipRetrieval, texts: Any, pad_to_max_length: bool) -> TokenBatch:
    if isinstance(texts, TokenBatch):
        tok = texts
    elif isinstance(texts, tuple) and len(texts) == 2 and isinstance(texts[0], torch.Tensor):
        tok = TokenBatch(texts[0].long(), texts[1].long(), model.tokenizer.enc_token_id)
    else:
        tok = model.tokenizer(list(texts))
    if pad_to_max_length and tok.input_ids.shape[1] < model.tokenizer.max_length:
        extra = model.tokenizer.max_length - tok.input_ids.shape[1]
        pad_id = int(model.tokenizer.hf.pad_token_id)
        tok = TokenBatch(
            F.pad(tok.input_ids, (0, extra), value=pad_id),
            F.pad(tok.attention_mask, (0, extra), value=0),
            tok.enc_token_id,
        )
    return tok.to(model.device)


def blip_features(
    model: BlipRetrieval,
    pixels: torch.Tensor,
    texts_or_input_ids: Sequence[str] | TokenBatch | tuple[torch.Tensor, torch.Tensor],
    image_ids: torch.Tensor | Sequence[Any],
    attribute_keys: torch.Tensor | Sequence[Any] | None = None,
    *,
    pad_to_max_length: bool = False,
) -> BlipFeatures:
    """Run both encoders on a batch (with grad). `pad_to_max_length`: equal token lengths across ranks."""
    tok = _token_batch(model, texts_or_input_ids, pad_to_max_length)
    tokens = model.image_tokens(pixels.to(model.device))
    return BlipFeatures(
        image_tokens=tokens,
        image_feat=model.image_features(tokens),
        text_feat=model.text_features(tok.input_ids, tok.attention_mask),
        input_ids=tok.input_ids,
        attention_mask=tok.attention_mask,
        image_ids=as_id_tensor(image_ids, model.device),
        attr_ids=None if attribute_keys is None else as_id_tensor(attribute_keys, model.device),
    )


def positive_mask(
    local_ids: torch.Tensor,
    world_ids: torch.Tensor,
    local_attr: torch.Tensor | None = None,
    world_attr: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B,N] bool: same image id, or (many-to-many, when attribute ids are given) same attribute key."""
    pos = local_ids[:, None] == world_ids[None, :]
    if local_attr is not None and world_attr is not None:
        pos = pos | (local_attr[:, None] == world_attr[None, :])
    return pos


def sample_hard_negatives(
    sim: torch.Tensor,
    exclude: torch.Tensor,
    generator: torch.Generator | None = None,
    hard_share: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One negative column per row, drawn from softmax(sim) with `exclude`d entries at zero weight (BLIP ITM).

    `hard_share` < 1 draws from the mixture hard_share * that distribution + (1 - hard_share) * uniform over
    the allowed entries (loss.itm_hard_share). Returns (index [B], valid [B]); a row whose every entry is
    excluded has no negative (valid False). Rows whose allowed weights all underflow to 0 fall back to
    uniform over the allowed entries.
    """
    with torch.no_grad():
        weights = F.softmax(sim.float(), dim=1).masked_fill(exclude, 0.0)
        allowed = ~exclude
        valid = allowed.any(dim=1)
        total = weights.sum(dim=1)
        fallback = valid & ~(torch.isfinite(total) & (total > 0))
        weights[fallback] = allowed[fallback].float()
        if hard_share < 1.0:
            uniform = allowed.float()
            weights = hard_share * weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-30) + (
                1.0 - hard_share
            ) * uniform / uniform.sum(dim=1, keepdim=True).clamp_min(1.0)
        weights[~valid] = 1.0  # any column; the caller drops these rows
        index = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    return index, valid


@dataclass
class DistillTargets:
    """What momentum distillation adds to one step's ITC: the columns (the momentum model's features of the
    gathered batch, then the queue's) and the local rows' own momentum features for the soft targets."""

    image_feat_m: torch.Tensor  # [b,D] momentum image features of the local rows
    text_feat_m: torch.Tensor  # [b,D]
    image_all: torch.Tensor  # [N+Q,D] columns for text -> image: gathered batch (momentum), then the queue
    text_all: torch.Tensor  # [N+Q,D] columns for image -> text
    pos_i2t: torch.Tensor  # [b,N+Q] bool: positives of each local image among the text columns
    pos_t2i: torch.Tensor  # [b,N+Q] bool: positives of each local text among the image columns
    alpha: float  # weight of the momentum softmax in the targets


def distilled_itc(
    image_feat: torch.Tensor, text_feat: torch.Tensor, temp: torch.Tensor, bank: DistillTargets
) -> torch.Tensor:
    """BLIP's ITC with momentum distillation: the mean of the i2t and t2i soft-target cross-entropies, the
    online local features (with grad) against the bank's momentum columns (without)."""
    sim_i2t = image_feat @ bank.text_all.t().to(image_feat.dtype) / temp
    sim_t2i = text_feat @ bank.image_all.t().to(text_feat.dtype) / temp
    with torch.no_grad():
        hard_i2t = bank.pos_i2t.float() / bank.pos_i2t.float().sum(dim=1, keepdim=True)
        hard_t2i = bank.pos_t2i.float() / bank.pos_t2i.float().sum(dim=1, keepdim=True)
        soft_i2t = F.softmax((bank.image_feat_m @ bank.text_all.t() / temp).float(), dim=1)
        soft_t2i = F.softmax((bank.text_feat_m @ bank.image_all.t() / temp).float(), dim=1)
        targets_i2t = bank.alpha * soft_i2t + (1 - bank.alpha) * hard_i2t
        targets_t2i = bank.alpha * soft_t2i + (1 - bank.alpha) * hard_t2i
    loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * targets_i2t).sum(dim=1).mean()
    loss_t2i = -(F.log_softmax(sim_t2i, dim=1) * targets_t2i).sum(dim=1).mean()
    return (loss_i2t + loss_t2i) / 2


def blip_itc_itm_loss(
    model: BlipRetrieval,
    pixels: torch.Tensor | None,
    texts_or_input_ids: Sequence[str] | TokenBatch | tuple[torch.Tensor, torch.Tensor] | None,
    image_ids: torch.Tensor | Sequence[Any] | None,
    attribute_keys: torch.Tensor | Sequence[Any] | None = None,
    *,
    many_to_many: bool = False,
    features: BlipFeatures | None = None,
    world: BlipFeatures | None = None,
    generator: torch.Generator | None = None,
    positives: tuple[torch.Tensor, torch.Tensor] | None = None,
    momentum: DistillTargets | None = None,
    itm_hard_share: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The seed's BLIP loss: ITC (soft targets over same-id positives) + ITM with one hard negative image per
    text and one hard negative text per image. Returns {"loss", "itc", "itm", "temp"}.

    `features`/`world`: precomputed local features and their DDP gather (see the module docstring); a
    sample's own pair is found in `world` by its id. `many_to_many`: same attribute key counts as positive
    for ITC and is never drawn as an ITM negative (needs `attribute_keys`). `positives`: explicit bool masks
    (local image -> world text [b,N], local text -> world image [b,N]) instead of ids / `many_to_many`, for
    rules equality cannot express (the "contain" rule is not symmetric); each row must hold its own pair.
    `momentum`: momentum distillation + queue columns for ITC (`distilled_itc`); ITM is unchanged.
    `itm_hard_share`: the share of ITM negatives drawn by similarity (BLIP: 1), the rest uniformly.
    """
    model.clamp_temperature()
    local = features
    if local is None:
        if pixels is None or texts_or_input_ids is None or image_ids is None:
            raise ValueError("pass pixels, texts and image_ids, or precomputed `features`")
        local = blip_features(model, pixels, texts_or_input_ids, image_ids, attribute_keys)
    world = world if world is not None else local
    if positives is not None:
        pos_i2t, pos_t2i = (m.to(device=local.image_feat.device, dtype=torch.bool) for m in positives)
        want = (len(local), len(world))
        if tuple(pos_i2t.shape) != want or tuple(pos_t2i.shape) != want:
            raise ValueError(f"positives must be two [{want[0]},{want[1]}] masks")
    else:
        if many_to_many and (local.attr_ids is None or world.attr_ids is None):
            raise ConfigError("many_to_many needs an attribute key per sample", field="loss.many_to_many")
        attr = (local.attr_ids, world.attr_ids) if many_to_many else (None, None)
        pos_i2t = pos_t2i = positive_mask(local.image_ids, world.image_ids, *attr)

    # ITC: image -> all texts and text -> all images, soft targets = positives / row count.
    temp = model.temp
    if momentum is None:
        sim_i2t = local.image_feat @ world.text_feat.t() / temp
        sim_t2i = local.text_feat @ world.image_feat.t() / temp
        targets_i2t = pos_i2t.float() / pos_i2t.float().sum(dim=1, keepdim=True)
        targets_t2i = pos_t2i.float() / pos_t2i.float().sum(dim=1, keepdim=True)
        loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * targets_i2t).sum(dim=1).mean()
        loss_t2i = -(F.log_softmax(sim_t2i, dim=1) * targets_t2i).sum(dim=1).mean()
        itc = (loss_i2t + loss_t2i) / 2
    else:
        itc = distilled_itc(local.image_feat, local.text_feat, temp, momentum)
        with torch.no_grad():  # the online similarities over the gathered batch, for the hard negatives
            sim_i2t = local.image_feat @ world.text_feat.t() / temp
            sim_t2i = local.text_feat @ world.image_feat.t() / temp

    # ITM hard negatives: sampled without grad from the same similarities, positives masked out.
    share = itm_hard_share
    neg_image, ok_image = sample_hard_negatives(sim_t2i.detach(), pos_t2i, generator, share)  # per text
    neg_text, ok_text = sample_hard_negatives(sim_i2t.detach(), pos_i2t, generator, share)  # per image
    ids = torch.cat([local.input_ids, local.input_ids, world.input_ids[neg_text]])
    mask = torch.cat([local.attention_mask, local.attention_mask, world.attention_mask[neg_text]])
    images = torch.cat([local.image_tokens, world.image_tokens[neg_image], local.image_tokens])
    logits = model.itm_logits(ids, mask, images)
    b = len(local)
    labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long().to(logits.device)
    keep = torch.cat([torch.ones(b, dtype=torch.bool, device=logits.device), ok_image, ok_text])
    itm = F.cross_entropy(logits[keep], labels[keep])
    return {"loss": itc + itm, "itc": itc, "itm": itm, "temp": temp.detach()}
