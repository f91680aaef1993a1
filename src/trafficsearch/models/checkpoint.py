"""Checkpoint directories, whatever the family: model.json read/write, weight digests, atomic swap.

A directory holds weights.safetensors + model.json (its `family` names the loader, models/family.py) and
optionally config.yaml. Saving writes into a fresh sibling folder and swaps it in, so a crash mid-save leaves
the previous checkpoint intact. The families' own save/load (which tensors, which architecture keys) live
beside each family (models/clip.py, blip.py, attributes.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trafficsearch.errors import ConfigError
from trafficsearch.ioutil import file_sha256

WEIGHTS = "weights.safetensors"
MODEL_JSON = "model.json"
CONFIG_YAML = "config.yaml"
DEFAULT_FAMILY = "open_clip"  # CLIP checkpoints predate the "family" key

__all__ = [
    "CONFIG_YAML",
    "DEFAULT_FAMILY",
    "MODEL_JSON",
    "WEIGHTS",
    "existing_dir",
    "family_of",
    "file_sha256",
    "read_model_json",
    "state_digest",
    "swap_in",
    "write_dir",
]


def state_digest(module: nn.Module) -> str:
    """sha256 over parameter names and bytes: identifies in-memory weights that have no file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def swap_in(tmp: Path, target: Path) -> None:
    """Replace directory `target` by `tmp`: target -> target.old, tmp -> target, drop target.old."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    if old.exists():
        shutil.rmtree(old)


def write_dir(target: str | Path, write: Callable[[Path], None]) -> Path:
    """`write(tmp)` fills a fresh sibling folder, which then replaces `target` (swap_in)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write(tmp)
    swap_in(tmp, target)
    return target


def existing_dir(target: Path) -> Path | None:
    """The checkpoint dir to read: `target`, or its `.old` copy when a crash hit between the two renames."""
    if (target / MODEL_JSON).is_file():
        return target
    old = target.with_name(target.name + ".old")
    return old if (old / MODEL_JSON).is_file() else None


def read_model_json(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """model.json of a checkpoint dir as a dict; ConfigError names the file (and a missing `required` key)."""
    path = Path(path)
    file = path / MODEL_JSON
    if not file.is_file():
        raise ConfigError("not a checkpoint directory: model.json is missing", path=path)
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", path=file, line=exc.lineno) from None
    if not isinstance(info, dict):
        raise ConfigError("expected a JSON object", path=file)
    for key in required:
        if key not in info:
            raise ConfigError("missing key", path=file, field=key)
    return info


def family_of(path: str | Path) -> str:
    """The family a checkpoint dir's model.json names (open_clip when it names none)."""
    family = read_model_json(path).get("family", DEFAULT_FAMILY)
    if not isinstance(family, str):
        raise ConfigError("expected a string", path=Path(path) / MODEL_JSON, field="family")
    return family
