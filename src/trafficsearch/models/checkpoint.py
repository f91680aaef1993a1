"""Checkpoint directories: weights.safetensors + model.json (architecture, preprocessing) + config.yaml.

A directory is self-contained: loading needs nothing but it (and the installed MiniLM package when the text
tower is MiniLM). Saving writes into a fresh sibling folder and swaps it in, so a crash mid-save leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from trafficsearch.data.transforms import Preprocess
from trafficsearch.errors import ConfigError
from trafficsearch.ioutil import atomic_write_json, atomic_write_text
from trafficsearch.models.clip import OpenClipModel, build_from_config, sha256_file

WEIGHTS = "weights.safetensors"
MODEL_JSON = "model.json"
CONFIG_YAML = "config.yaml"


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


def existing_dir(target: Path) -> Path | None:
    """The checkpoint dir to read: `target`, or its `.old` copy when a crash hit between the two renames."""
    if (target / MODEL_JSON).is_file():
        return target
    old = target.with_name(target.name + ".old")
    return old if (old / MODEL_JSON).is_file() else None


def save_checkpoint(
    path: str | Path,
    model: OpenClipModel,
    config_yaml: str | None = None,
    extra_files: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint dir; `extra_files` maps file names to objects for torch.save (train state)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    state = {k: v.detach().cpu().contiguous() for k, v in model.model.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS))
    info = model.model_json()
    info["weights_sha256"] = sha256_file(tmp / WEIGHTS)
    atomic_write_json(tmp / MODEL_JSON, info)
    if config_yaml is not None:
        atomic_write_text(tmp / CONFIG_YAML, config_yaml)
    for name, obj in (extra_files or {}).items():
        torch.save(obj, tmp / name)
    swap_in(tmp, target)
    return target


def read_model_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    file = path / MODEL_JSON
    if not file.is_file():
        raise ConfigError("not a checkpoint directory: model.json is missing", path=path)
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc}", path=file, line=exc.lineno) from None
    for key in ("name", "model_cfg", "preprocess"):
        if key not in info:
            raise ConfigError("missing key", path=file, field=key)
    return info


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> OpenClipModel:
    """Rebuild the model from model.json and load weights.safetensors (strict: every tensor must match)."""
    path = Path(path)
    info = read_model_json(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ConfigError("checkpoint has no weights.safetensors", path=path)
    preprocess = Preprocess.from_dict(info["preprocess"])
    wrapped = build_from_config(
        info["name"], info["model_cfg"], load_text_pretrained=False, transform=preprocess.kind, device="cpu"
    )
    state = load_file(str(weights))
    try:
        wrapped.model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"weights do not match model.json: {str(exc).splitlines()[0]}", path=weights
        ) from None
    wrapped.model.eval()
    wrapped.preprocess = preprocess
    wrapped.image_size = preprocess.image_size
    wrapped.source = {
        "pretrained": None,
        "checkpoint": str(path.resolve()),
        "weights_sha256": sha256_file(weights),
    }
    wrapped.model.to(torch.device(device))
    wrapped.device = torch.device(device)
    return wrapped
