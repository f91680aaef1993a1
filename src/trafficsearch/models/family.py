"""The family registry: each model family registers how to load its checkpoints (and specs) by name.

Like timm's `register_model` / LAVIS's registry: models/clip.py, blip.py and attributes.py call
`register_family` when imported; models/factory.py looks the loader up by model.json's `family` (or a spec's
`<family>:` prefix). This module knows no family, so the families can import it without a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

Device = str | torch.device


@dataclass(frozen=True)
class Family:
    """`load(dir, device)` opens a checkpoint dir of this family; `create(rest, device)` builds a model from
    a `<name>:<rest>` spec (e.g. open_clip:ViT-B-32:TAG, blip:blip-tiny); None when the family has none."""

    name: str
    load: Callable[[Path, Device], Any]
    create: Callable[[str, Device], Any] | None = None


_FAMILIES: dict[str, Family] = {}


def register_family(
    name: str,
    load: Callable[[Path, Device], Any],
    create: Callable[[str, Device], Any] | None = None,
) -> Family:
    family = Family(name, load, create)
    _FAMILIES[name] = family
    return family


def registered() -> dict[str, Family]:
    return dict(_FAMILIES)
