"""A tiny deterministic RetrievalModel for tests and examples: an image's vector is its mean colour, a
text's vector is the colour it names. Known vectors make "the search returns the right image" checkable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trafficsearch.data.labels import write_labels
from trafficsearch.data.records import Record, VehicleAttributes

COLOR_WORDS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
    "grey": (0.5, 0.5, 0.5),
    "orange": (1.0, 0.5, 0.0),
    "purple": (0.5, 0.0, 0.5),
}


def color_embedding(rgb: torch.Tensor, variant: int = 0) -> torch.Tensor:
    """[B,3] colours in 0..1 -> [B,8] unit vectors; `variant` changes the map (a 'different checkpoint')."""
    centred = rgb - 0.5
    extra = torch.stack([centred.mean(1), centred[:, 0] - centred[:, 1]], dim=1)
    features = torch.cat([centred, extra, torch.full_like(rgb, 0.05)], dim=1)
    if variant:
        features = features.roll(variant, dims=1)
    return torch.nn.functional.normalize(features, dim=1)


class ColorTransform:
    """PIL RGB -> [3, s, s] float tensor in 0..1 (a picklable class, so DataLoader workers can use it)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        small = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        array = np.asarray(small, dtype=np.float32) / 255.0
        return torch.from_numpy(array.copy()).permute(2, 0, 1)


class ColorModel:
    """Implements the RetrievalModel interface of trafficsearch.models.base with colour features."""

    def __init__(self, variant: int = 0, image_size: int = 8) -> None:
        self.variant = variant
        self.name = f"color-test-v{variant}"
        self.embed_dim = 8
        self.image_size = image_size
        self.text_calls = 0  # how many texts were encoded (tests check the query cache)

    def image_transform(self) -> ColorTransform:
        return ColorTransform(self.image_size)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return color_embedding(pixels.float().mean(dim=(2, 3)), self.variant)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        self.text_calls += len(texts)
        rgb = []
        for text in texts:
            words = [w.strip(".,!?").lower() for w in text.split()]
            rgb.append(next((COLOR_WORDS[w] for w in words if w in COLOR_WORDS), (0.5, 0.5, 0.5)))
        return color_embedding(torch.tensor(rgb, dtype=torch.float32), self.variant)

    def manifest(self) -> dict:
        return {
            "name": self.name,
            "checkpoint_sha256": f"color-{self.variant}",
            "embed_dim": self.embed_dim,
            "image_size": self.image_size,
            "preprocessing": {"image_size": self.image_size, "resize": "bilinear"},
        }


def make_color_gallery(
    root: Path, names_to_colors: dict[str, str], size: tuple[int, int] = (24, 32)
) -> list[Path]:
    """Write one solid-colour JPEG per name (e.g. {"a.jpg": "red"}) under `root`; returns the paths."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, color in names_to_colors.items():
        rgb = tuple(int(round(c * 255)) for c in COLOR_WORDS[color])
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, rgb).save(path, quality=95)
        paths.append(path)
    return paths


VEHICLE_COLORS = ("red", "green", "blue", "yellow", "orange", "purple", "white", "black")


@dataclass(frozen=True)
class ColorVehicles:
    """A colour gallery with its label file: vehicle i has colour VEHICLE_COLORS[i % 8] (two per colour
    when n = 16), and its caption names that colour, so ColorModel ranks each caption's images first."""

    images: Path
    labels: Path
    records: list[Record]


def write_color_vehicles(images: Path, labels: Path, n: int, text: str = "A {color} Audi.") -> ColorVehicles:
    """Write `n` solid-colour vehicle crops v00.jpg... under `images` and their labels to `labels`."""
    names = {f"v{i:02d}.jpg": VEHICLE_COLORS[i % len(VEHICLE_COLORS)] for i in range(n)}
    make_color_gallery(images, names)
    records = [
        Record(name, "vehicle", f"{c} Audi.", text.format(color=c), vehicle=VehicleAttributes(c, "Audi"))
        for name, c in names.items()
    ]
    write_labels(records, labels)
    return ColorVehicles(images, labels, records)


COLOR_MODELS = {"color0": ColorModel(0), "color2": ColorModel(2)}


def build_color_ensemble(root: Path, n: int = 24, **config: object) -> Path:
    """A two-member ensemble index (colour models "color0" weight 1, "color2" weight 3, l2) over `n` colour
    vehicles under `root` (root/g, root/labels.txt, root/ens.yaml, root/idx); `config` adds or overrides
    ensemble keys (e.g. candidates=4). Returns `root`."""
    import yaml

    from trafficsearch.search.ensemble import build_ensemble_index

    write_color_vehicles(root / "g", root / "labels.txt", n)
    ensemble = {
        "name": "two-colours",
        "normalization": "l2",
        "members": [
            {"name": "a", "model": "color0", "weight": 1.0},
            {"name": "b", "model": "color2", "weight": 3.0},
        ],
        **config,
    }
    (root / "ens.yaml").write_text(yaml.safe_dump(ensemble))
    build_ensemble_index(
        root / "ens.yaml",
        root / "g",
        root / "idx",
        labels=root / "labels.txt",
        models=COLOR_MODELS,
        progress=False,
        workers=0,
    )
    return root
