"""Tiny competition-layout data sets for tests: coloured boxes on a grey ground, captions naming the colour.

Any area's end-to-end test can train the tiny model on these without the synthetic renderer.
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
