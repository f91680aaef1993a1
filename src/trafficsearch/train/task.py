"""The seam between the training loop and a model family: one loop trains CLIP and BLIP alike.

The loop owns data order, optimiser, schedule, precision, distribution, checkpoints and validation; a
TrainTask owns what differs per family: which parameters train, the loss of a batch, post-step clamps,
and how the model is saved and exposed for retrieval.

Optional hooks the loop looks up with getattr: `preprocess`, `prepare(texts, run_dir, advance, is_main)`,
`snapshot()` (background checkpoint writes), `to_pure_bf16()`, `set_steps_per_epoch(n)`, and
`train_state()` / `load_train_state(state)`: state beyond the weights that a resume needs (BLIP's momentum
encoders and ITC queue), saved in last/train_state.pt and never in the exported checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from trafficsearch.data.records import Record
from trafficsearch.models.base import RetrievalModel
from trafficsearch.train.dist import DistInfo


@dataclass
class Batch:
    """One local batch: normalised pixels [B,3,S,S], the caption of each pair, its record, and an image id
    per pair (pairs made from the same image by prompt augmentation share the id)."""

    pixels: torch.Tensor
    texts: list[str]
    records: list[Record]
    image_ids: torch.Tensor


class TrainTask(Protocol):
    """What the loop needs from a model family."""

    module: torch.nn.Module  # the parameters the optimiser sees (requires_grad marks the trainable ones)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: no decay on gains, biases, norms and the logit scale / temperature."""
        ...

    def train_mode(self) -> None:
        """module.train(), keeping frozen trunks in eval mode."""
        ...

    def loss(self, batch: Batch, step: int, dist: DistInfo) -> dict[str, torch.Tensor]:
        """{'loss': scalar to backpropagate, ...other scalars to log}. Gathers across ranks itself."""
        ...

    def after_step(self) -> None:
        """Clamps after the optimiser step (CLIP logit scale <= ln 100, BLIP temperature in [0.001, 0.5])."""
        ...

    def retrieval_model(self) -> RetrievalModel:
        """The model as search sees it (eval-mode encoders), for validation and export."""
        ...

    def save(self, path: Path, config_yaml: str | None) -> None:
        """A checkpoint directory: weights.safetensors + model.json + config.yaml."""
        ...

    def load_weights(self, path: Path) -> None:
        """Load weights.safetensors from a checkpoint directory written by save()."""
        ...
