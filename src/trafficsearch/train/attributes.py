"""Train the attribute baseline (models/attributes.py) on a competition-layout train split.

Loss: CE over kind + BCE over the 21 pedestrian attributes (pedestrians only) + CE over vehicle colour, brand
and type where the label states them (train labels never hold all three). Images are decoded once into a
uint8 tensor. A checkpoint (weights.safetensors + model.json, optimizer state in optimizer.safetensors,
progress in state.json) is written atomically after every epoch into OUT/last; rerunning resumes there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from trafficsearch.data.dataset import EpochBatches, ImageDataset, load_split, preload
from trafficsearch.data.records import Record
from trafficsearch.data.transforms import normalize_uint8
from trafficsearch.data.vocab import BRANDS, COLORS, N_ATTRIBUTES, VEHICLE_TYPES
from trafficsearch.errors import ConfigError
from trafficsearch.ioutil import atomic_open, atomic_write_json
from trafficsearch.models.attributes import (
    KINDS,
    AttributeModel,
    create_attribute_model,
    load_attribute_model,
)

IGNORE = -100


@dataclass
class AttributeTrainConfig:
    root: str  # competition layout: ROOT/train/train_label.txt + train_images/
    out: str
    image_size: int = 64
    width: int = 32
    depth: int = 4
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    limit: int | None = None
    workers: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttributeTrainConfig:
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(d) - known)
        if extra:
            raise ConfigError(f"unknown key; expected one of {', '.join(sorted(known))}", field=extra[0])
        for key in ("root", "out"):
            if key not in d:
                raise ConfigError("required", field=key)
        return cls(**d)


def targets(records: list[Record]) -> dict[str, torch.Tensor]:
    """Per-record training targets; IGNORE / zero mask where the label says nothing."""
    n = len(records)
    out = {
        "kind": torch.tensor([KINDS.index(r.kind) for r in records]),
        "pedestrian": torch.zeros(n, N_ATTRIBUTES),
        "ped_mask": torch.zeros(n),
        "color": torch.full((n,), IGNORE),
        "brand": torch.full((n,), IGNORE),
        "type": torch.full((n,), IGNORE),
    }
    for i, r in enumerate(records):
        if r.kind == "pedestrian" and r.vector is not None:
            out["pedestrian"][i] = torch.tensor(r.vector, dtype=torch.float32)
            out["ped_mask"][i] = 1.0
        elif r.vehicle is not None:
            v = r.vehicle
            if v.color in COLORS:
                out["color"][i] = COLORS.index(v.color)
            if v.brand in BRANDS:
                out["brand"][i] = BRANDS.index(v.brand)
            if v.type in VEHICLE_TYPES:
                out["type"][i] = VEHICLE_TYPES.index(v.type)
    return out


def attribute_loss(logits: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> torch.Tensor:
    loss = F.cross_entropy(logits["kind"], t["kind"])
    mask = t["ped_mask"]
    if mask.sum() > 0:
        bce = F.binary_cross_entropy_with_logits(logits["pedestrian"], t["pedestrian"], reduction="none")
        loss = loss + (bce.mean(dim=1) * mask).sum() / mask.sum()
    for head in ("color", "brand", "type"):
        if (t[head] != IGNORE).any():
            loss = loss + F.cross_entropy(logits[head], t[head], ignore_index=IGNORE)
    return loss


def _save_state(
    directory: Path, model: AttributeModel, optimizer: torch.optim.Optimizer, state: dict
) -> None:
    from safetensors.torch import save

    model.save(directory)
    flat: dict[str, torch.Tensor] = {}
    for pid, values in optimizer.state_dict()["state"].items():
        for key, value in values.items():
            flat[f"{pid}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    with atomic_open(directory / "optimizer.safetensors", "wb") as handle:
        handle.write(save(flat))
    atomic_write_json(directory / "state.json", state)


def _load_optimizer(directory: Path, optimizer: torch.optim.Optimizer) -> None:
    from safetensors.torch import load_file

    flat = load_file(str(directory / "optimizer.safetensors"))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in flat.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    sd = optimizer.state_dict()
    sd["state"] = state
    optimizer.load_state_dict(sd)


def train_attributes(cfg: AttributeTrainConfig, progress: bool = True) -> Path:
    """Train (or resume) and return OUT/last, a checkpoint `load_attribute_model` and ensembles read."""
    out = Path(cfg.out)
    last = out / "last"
    records, images = load_split(cfg.root, "train", cfg.limit)
    if (last / "state.json").is_file():
        state = json.loads((last / "state.json").read_text(encoding="utf-8"))
        if state.get("config", {}).get("root") != cfg.root:
            raise ConfigError(
                "OUT/last was trained on another root; use a new --out", path=last, field="root"
            )
        model = load_attribute_model(last)
        start = int(state["epoch"])
    else:
        torch.manual_seed(cfg.seed)
        model = create_attribute_model(cfg.image_size, cfg.width, cfg.depth, cfg.seed)
        state, start = {"epoch": 0, "losses": []}, 0
    optimizer = torch.optim.AdamW(model.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if start:
        _load_optimizer(last, optimizer)
    pixels = preload(ImageDataset(records, images, model.preprocess), workers=cfg.workers)
    t = targets(records)
    batches = EpochBatches(len(records), min(cfg.batch_size, len(records)), cfg.seed)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("attributes", total=(cfg.epochs - start) * len(batches))
        for epoch in range(start, cfg.epochs):
            model.net.train()
            total = 0.0
            for index in batches.batches(epoch):
                x = normalize_uint8(pixels[index], model.preprocess)
                loss = attribute_loss(model.net(x), {k: v[index] for k, v in t.items()})
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item()
                bar.update(task, advance=1, description=f"epoch {epoch + 1} loss {loss.item():.3f}")
            model.net.eval()
            state = {
                "epoch": epoch + 1,
                "losses": [*state["losses"], total / max(len(batches), 1)],
                "config": asdict(cfg),
            }
            _save_state(last, model, optimizer, state)
    return last
