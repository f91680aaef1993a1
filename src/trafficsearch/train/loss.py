"""The CLIP loss the loop trains with: train/contrastive.py's pure functions + the config's switches.

One implementation: the maths (per-pair CE, soft targets, truncation, open_clip equivalence) lives in
contrastive.py; this module picks the positives of a batch of pairs (`loss.targets`), applies the
truncation schedule, and gathers features over ranks WITH gradients so that under DDP the loss (and the
truncation) is over the global batch, exactly as one process would compute it.

Target modes:
- one_to_one: arange labels (the seed; open_clip's ClipLoss);
- same_text: identical captions are positives (the demo's former multi_positive loss: captions repeat);
- same_image: pairs of one image (prompt augmentation) are positives;
- equal / contain: the evaluation's relevance rules over the pairs' annotations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from trafficsearch.data.records import Record
from trafficsearch.errors import ConfigError
from trafficsearch.train.contrastive import build_targets, contrastive_loss, kept_count, positive_mask
from trafficsearch.train.dist import DistInfo

TARGET_MODES = ("one_to_one", "same_text", "same_image", "equal", "contain")


def pair_targets(
    mode: str,
    records: Sequence[Record],
    texts: Sequence[str],
    image_ids: Sequence[int],
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """Positive mask [n, n] of a batch of pairs, or None for arange labels (one_to_one)."""
    if mode == "one_to_one":
        return None
    if mode == "same_text":
        return positive_mask("equal", list(texts), device=device)
    if mode == "same_image":
        return positive_mask("equal", [int(i) for i in image_ids], device=device)
    if mode in ("equal", "contain"):
        return build_targets(records, mode, device=device)
    raise ConfigError(f"unknown target mode {mode!r}; expected one of {', '.join(TARGET_MODES)}")


def gather_with_grad(x: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    """All ranks' rows in rank order; gradients flow back to every rank's own rows (summed over ranks,
    which the gradient average over ranks turns back into the single-process gradient)."""
    if not dist.distributed:
        return x
    import warnings

    import torch.distributed.nn.functional as dnn

    with warnings.catch_warnings():  # deprecated in favour of a private API; still the public autograd gather
        warnings.simplefilter("ignore", FutureWarning)
        # the group is passed at call time: the default was bound at import, stale after a re-init (stages)
        return torch.cat(dnn.all_gather(x, group=tdist.group.WORLD), dim=0)


def gather_objects(items: list, dist: DistInfo) -> list:
    """Rank-ordered concatenation of a python list over ranks (captions and records of the global batch)."""
    if not dist.distributed:
        return items
    out: list[list] = [[] for _ in range(dist.world_size)]
    tdist.all_gather_object(out, items)
    return [x for part in out for x in part]


@dataclass(frozen=True)
class ContrastiveLoss:
    """loss.targets / truncate_ratio / truncate_start_step applied to one (local) batch of features."""

    targets: str = "one_to_one"
    truncate_ratio: float = 0.0
    truncate_start_step: int = 0

    def ratio_at(self, step: int) -> float:
        return self.truncate_ratio if step >= self.truncate_start_step else 0.0

    def __call__(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        *,
        step: int,
        dist: DistInfo,
        records: Sequence[Record] = (),
        texts: Sequence[str] = (),
        image_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """{'loss', 'kept'}: features are L2-normalised local rows; logit_scale is the multiplier."""
        img = gather_with_grad(image_features, dist)
        txt = gather_with_grad(text_features, dist)
        mask = None
        if self.targets != "one_to_one":
            ids = image_ids.tolist() if image_ids is not None else []
            if self.targets == "same_image":
                ids = gather_objects(ids, dist)
            mask = pair_targets(
                self.targets,
                gather_objects(list(records), dist) if self.targets in ("equal", "contain") else [],
                gather_objects(list(texts), dist) if self.targets == "same_text" else [],
                ids,
                device=img.device,
            )
        ratio = self.ratio_at(step)
        loss, per_pair = contrastive_loss(img, txt, logit_scale, targets=mask, truncate_ratio=ratio)
        kept = torch.tensor(float(kept_count(per_pair.shape[0], ratio)))
        return {"loss": loss, "kept": kept}
