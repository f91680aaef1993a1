"""Tiny competition-layout data sets for tests: coloured boxes on a grey ground, captions naming the colour.

Why in the package: any area's end-to-end test can train the tiny model without the synthetic renderer.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[3]
TINY_CONFIG = REPO / "configs" / "demo" / "tiny-test.yaml"
COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60), "yellow": (230, 210, 40)}
BRANDS = ("Audi", "BMW", "Ford")


def _name(rng: np.random.Generator) -> str:
    return "".join(rng.choice(list(string.ascii_lowercase), size=10)) + ".jpg"


def make_split(root: Path, split: str, n: int, seed: int) -> Path:
    """Write n vehicle crops + labels (`{colour} {brand}.`): the box colour matches the caption."""
    rng = np.random.default_rng(seed)
    images = root / split / f"{split}_images"
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    names = list(COLORS)
    for i in range(n):
        color = names[i % len(names)]
        brand = BRANDS[(i // len(names)) % len(BRANDS)]
        w, h = int(rng.integers(24, 60)), int(rng.integers(24, 60))
        img = Image.new("RGB", (w, h), (128, 128, 128))
        ImageDraw.Draw(img).rectangle([w // 6, h // 6, w - w // 6, h - h // 6], fill=COLORS[color])
        name = _name(rng)
        img.save(images / name, quality=95)
        attr = f"{color} {brand}."
        text = f"This is a {attr}"
        lines.append(f"{name}${attr}${text}")
    (root / split / f"{split}_label.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def make_dataset(root: Path, n_train: int = 12, n_val: int = 8) -> Path:
    make_split(root, "train", n_train, seed=1)
    make_split(root, "val", n_val, seed=2)
    return root


# XLM-R large as open_clip's xlm-roberta-large-ViT-H-14 expects it (transformers' XLMRobertaConfig values),
# so the architecture builds offline; the hub config/tokenizer are only needed with real weights.
XLM_ROBERTA_LARGE = {
    "model_type": "xlm-roberta",
    "architectures": ["XLMRobertaForMaskedLM"],
    "vocab_size": 250002,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "hidden_act": "gelu",
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-05,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}


def offline_clip(name: str, cache_dir: Path, transform: str = "pad"):  # noqa: ANN201 - OpenClipModel
    """open_clip `name` with random weights and no download: an HF text tower is built from a local config
    (`hf_model_pretrained: false`) and tokenised by the packaged MiniLM BERT tokenizer as a stand-in
    (ids stay inside XLM-R's vocabulary; real training uses the model's own sentencepiece tokenizer)."""
    import json

    from trafficsearch.models import registry
    from trafficsearch.models.clip import build_from_config, create_clip

    cfg = json.loads(json.dumps(registry.get_model_config(name)))
    text = cfg.get("text_cfg", {})
    if not text.get("hf_model_name"):
        return create_clip(name, None, transform=transform)
    if "xlm-roberta" not in text["hf_model_name"]:
        raise ValueError(f"no offline config for {text['hf_model_name']}")
    local = Path(cache_dir) / "xlm-roberta-large"
    local.mkdir(parents=True, exist_ok=True)
    (local / "config.json").write_text(json.dumps(XLM_ROBERTA_LARGE), encoding="utf-8")
    text.update(
        hf_model_name=str(local), hf_model_pretrained=False, hf_tokenizer_name=str(registry.minilm_dir())
    )
    return build_from_config(name, cfg, load_text_pretrained=False, transform=transform)
