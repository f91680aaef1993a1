"""The CLIP contrastive loss with the seed's switches, as pure functions over computed features.

Why pure functions: the loop (single process or DDP) decides how features are gathered; this module only
turns (image features, text features, positives) into a loss, so it is testable against open_clip's
`ClipLoss` and on hand-made logits.

Switches (docs seed-recipe.md sections 3-5):
- Noisy-loss truncation: the per-pair loss is image->text CE (row i) + text->image CE (row i); the largest
  `truncate_ratio` of them across the (global) batch are dropped, keeping the lowest `int(n * (1 - ratio))`
  as the seed did, and the mean of the rest is divided by 2 as open_clip does. Off before `start_step`.
- Many-to-many targets: `one_to_one` (the seed: arange labels, so duplicate captions in a batch are
  negatives), `equal` (pairs with equal annotations are positives), `contain` (pedestrians: same gender and
  the image has every attribute the text's label has; vehicles stay equal). Several positives become soft
  targets: the positive mask normalised per row.
- `param_groups`: open_clip's weight-decay rule; `lock_summary`: what a lock left trainable.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from trafficsearch.data.records import Record
from trafficsearch.errors import ConfigError

TargetMode = Literal["one_to_one", "equal", "contain"]
TARGET_MODES: tuple[str, ...] = ("one_to_one", "equal", "contain")
SEED_TRUNCATE_RATIO = 0.05


@dataclass(frozen=True)
class ContrastiveConfig:
    """The loss switches a training config sets (YAML `loss:` section)."""

    targets: str = "one_to_one"
    truncate_ratio: float = SEED_TRUNCATE_RATIO
    truncate_start_step: int = 0

    def __post_init__(self) -> None:
        if self.targets not in TARGET_MODES:
            raise ConfigError(
                f"unknown target mode {self.targets!r}; expected one of {', '.join(TARGET_MODES)}",
                field="loss.targets",
            )
        if not 0.0 <= self.truncate_ratio < 1.0:
            raise ConfigError(
                f"truncate_ratio must be in [0, 1), got {self.truncate_ratio}", field="loss.truncate_ratio"
            )
        if self.truncate_start_step < 0:
            raise ConfigError(
                f"truncate_start_step must be >= 0, got {self.truncate_start_step}",
                field="loss.truncate_start_step",
            )

    def ratio_at(self, step: int) -> float:
        """The truncation ratio in force at optimiser step `step` (0 before the start step)."""
        return self.truncate_ratio if step >= self.truncate_start_step else 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ContrastiveConfig:
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ConfigError(
                f"unknown key(s) {', '.join(extra)}; expected some of {', '.join(sorted(known))}",
                field="loss",
            )
        return cls(**d)


def kept_count(n: int, ratio: float) -> int:
    """How many per-pair losses survive truncation: the seed's int(n * (1 - ratio)), at least 1.

    A 1e-9 guard keeps float error from dropping one more than meant (10 * (1 - 0.9) is 0.99999...).
    """
    if ratio <= 0.0:
        return n
    return max(1, min(n, int(n * (1.0 - ratio) + 1e-9)))


def positive_mask(
    mode: str,
    keys: Sequence[Hashable] | None = None,
    vectors: Sequence[Sequence[int] | None] | torch.Tensor | None = None,
    *,
    n: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Bool [n_images, n_texts] matrix, entry (i, j) True when image i is a right answer for text j.

    Pair i of the batch is image i with text i, so the diagonal is always True.
    - one_to_one: the identity (needs `n` or `keys`);
    - equal: keys[i] == keys[j] (use `Record.relevance_key`);
    - contain: for two pedestrians (a 21-value vector each, None for vehicles), image i has text j's gender
      and every attribute text j has; any pair involving a vehicle falls back to equal keys.
    """
    if mode not in TARGET_MODES:
        raise ConfigError(f"unknown target mode {mode!r}; expected one of {', '.join(TARGET_MODES)}")
    if mode == "one_to_one":
        size = n if n is not None else (len(keys) if keys is not None else None)
        if size is None:
            raise ValueError("one_to_one targets need n or keys")
        return torch.eye(size, dtype=torch.bool, device=device)
    if keys is None:
        raise ValueError(f"{mode} targets need one annotation key per pair")
    ids: dict[Hashable, int] = {}
    codes = torch.tensor([ids.setdefault(k, len(ids)) for k in keys], device=device)
    equal = codes[:, None] == codes[None, :]
    if mode == "equal":
        return equal
    if vectors is None:
        raise ValueError("contain targets need the 21-value pedestrian vectors (None for vehicles)")
    if isinstance(vectors, torch.Tensor):
        vec = vectors.to(device=device, dtype=torch.int64)
        is_ped = torch.ones(len(vec), dtype=torch.bool, device=device)
    else:
        width = max((len(v) for v in vectors if v is not None), default=1)
        is_ped = torch.tensor([v is not None for v in vectors], dtype=torch.bool, device=device)
        vec = torch.tensor([list(v) if v is not None else [0] * width for v in vectors], device=device)
    if len(vec) != len(codes):
        raise ValueError(f"{len(codes)} keys but {len(vec)} vectors")
    image, text = vec[:, None, :], vec[None, :, :]  # rows images, columns texts
    contain = (image[..., 0] == text[..., 0]) & (image[..., 1:] >= text[..., 1:]).all(dim=-1)
    both = is_ped[:, None] & is_ped[None, :]
    return torch.where(both, contain, equal)


def build_targets(
    records: Sequence[Record], mode: str, device: torch.device | str | None = None
) -> torch.Tensor:
    """`positive_mask` for a batch of records (pair i = record i's image with one of its texts)."""
    if mode == "one_to_one":
        return positive_mask(mode, n=len(records), device=device)
    keys = [r.relevance_key for r in records]
    vectors = [r.vector if r.kind == "pedestrian" else None for r in records]
    return positive_mask(mode, keys, vectors, device=device)


def soft_targets(positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-normalised targets for image->text (rows of the mask) and text->image (rows of its transpose)."""
    mask = positives.float()
    return mask / mask.sum(dim=1, keepdim=True), mask.T / mask.T.sum(dim=1, keepdim=True)


def per_pair_losses(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """[n] image->text CE of row i plus text->image CE of row i; targets: positive mask or None (arange)."""
    logits_per_image = logit_scale * image_features @ text_features.T
    logits_per_text = logit_scale * text_features @ image_features.T
    n = logits_per_image.shape[0]
    if targets is None:
        labels = torch.arange(n, device=logits_per_image.device)
        return F.cross_entropy(logits_per_image, labels, reduction="none") + F.cross_entropy(
            logits_per_text, labels, reduction="none"
        )
    if targets.shape != logits_per_image.shape:
        raise ValueError(f"targets have shape {tuple(targets.shape)}, logits {tuple(logits_per_image.shape)}")
    if not bool(targets.diagonal().all()):
        raise ValueError("every pair must be its own positive (the targets' diagonal must be True)")
    image_to_text, text_to_image = soft_targets(targets.to(logits_per_image.device))
    return F.cross_entropy(logits_per_image, image_to_text.to(logits_per_image.dtype), reduction="none") + (
        F.cross_entropy(logits_per_text, text_to_image.to(logits_per_text.dtype), reduction="none")
    )


def truncated_mean(losses: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the lowest kept_count(n, ratio) values, and the bool mask of the kept ones."""
    n = losses.shape[0]
    keep = kept_count(n, ratio)
    kept = torch.zeros(n, dtype=torch.bool, device=losses.device)
    if keep == n:
        kept[:] = True
        return losses.mean(), kept
    order = torch.argsort(losses.detach(), stable=True)  # ascending, ties broken by index as torch.sort
    kept[order[:keep]] = True
    return losses[order[:keep]].mean(), kept


def contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    targets: torch.Tensor | None = None,
    truncate_ratio: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, per-pair losses [n]) of the symmetric CLIP loss over n pairs.

    Features are L2-normalised rows (gathered over ranks if the loop trains data-parallel: truncation is
    over the global batch); `logit_scale` is the multiplier (exp of the learned log scale). targets: a
    positive mask from `positive_mask`/`build_targets`, or None for open_clip's arange labels.
    With truncate_ratio 0 the loss equals `open_clip.loss.ClipLoss`.
    """
    losses = per_pair_losses(image_features, text_features, logit_scale, targets)
    mean, _ = truncated_mean(losses, truncate_ratio)
    return mean / 2, losses


def _no_decay(name: str, param: torch.Tensor) -> bool:
    # open_clip_train/main.py: gains, biases, norms and 1-d embeddings, and the logit scale.
    return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups with open_clip's rule: no decay when ndim < 2 or the name has bn/ln/bias/logit_scale.

    Frozen parameters are left out; empty groups are dropped. Each group carries a "name" for logging.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if _no_decay(name, param) else decay).append(param)
    groups = [
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
    ]
    return [g for g in groups if g["params"]]


@dataclass(frozen=True)
class LockSummary:
    """Parameter counts after locking: totals and per top-level module as (trainable, frozen)."""

    trainable: int
    frozen: int
    by_module: dict[str, tuple[int, int]]

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    @property
    def trainable_fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def describe(self) -> str:
        share = 100 * self.trainable_fraction
        return f"{self.trainable:,} trainable / {self.total:,} parameters ({share:.1f}%)"


def lock_summary(model: nn.Module) -> LockSummary:
    """Count trainable vs frozen parameters (shared tensors once), also per top-level child module."""
    trainable = frozen = 0
    by_module: dict[str, list[int]] = {}
    for name, param in model.named_parameters():  # named_parameters already skips shared duplicates
        top = name.split(".", 1)[0]
        slot = by_module.setdefault(top, [0, 0])
        if param.requires_grad:
            trainable += param.numel()
            slot[0] += param.numel()
        else:
            frozen += param.numel()
            slot[1] += param.numel()
    return LockSummary(trainable, frozen, {k: (v[0], v[1]) for k, v in by_module.items()})
