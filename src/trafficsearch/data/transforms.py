"""Image preprocessing, split into geometry (PIL -> square PIL) and normalisation (uint8 -> float tensor).

Why the split: geometry is deterministic, so training can run it once per image and keep the small uint8
squares in memory (`data.cache_images`), leaving only a cheap normalisation per step. Crops of people and
cars are tall or wide; `pad` keeps the whole object and its aspect (resize the longest side, centre it on
a black square), while `openclip` is open_clip's eval resize of the shortest side + centre crop, which cuts
off the ends of long objects, and `stretch` resizes straight to the square, distorting the aspect (the plain
baseline of the ablation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from trafficsearch.errors import ConfigError

TransformKind = Literal["pad", "openclip", "stretch"]
TRANSFORM_KINDS: tuple[str, ...] = ("pad", "openclip", "stretch")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class Preprocess:
    """Everything needed to reproduce a model's eval preprocessing; stored in model.json."""

    kind: str = "pad"
    image_size: int = 64
    mean: tuple[float, ...] = field(default=OPENAI_MEAN)
    std: tuple[float, ...] = field(default=OPENAI_STD)
    interpolation: str = "bicubic"
    fill: int = 0  # grey level of the padding (pad only): open_clip's fill_color of a tagged model

    def __post_init__(self) -> None:
        if self.kind not in TRANSFORM_KINDS:
            raise ConfigError(
                f"unknown transform {self.kind!r}; expected one of {', '.join(TRANSFORM_KINDS)}",
                field="data.transform",
            )
        if self.interpolation not in _RESAMPLE:
            raise ConfigError(f"unknown interpolation {self.interpolation!r}", field="interpolation")
        if self.image_size <= 0:
            raise ConfigError(f"image size must be positive, got {self.image_size}", field="image_size")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if not self.fill:  # written only when set: model.json and index fingerprints stay as before
            del d["fill"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(
            kind=d.get("kind", "pad"),
            image_size=int(d["image_size"]),
            mean=tuple(float(x) for x in d.get("mean", OPENAI_MEAN)),
            std=tuple(float(x) for x in d.get("std", OPENAI_STD)),
            interpolation=d.get("interpolation", "bicubic"),
            fill=int(d.get("fill", 0)),
        )

    def describe(self) -> str:
        how = {
            "pad": "resize longest side, centre on a zero-padded square",
            "openclip": "resize shortest side, centre crop",
            "stretch": "resize to a square, aspect not kept",
        }[self.kind]
        fill = f", padding grey {self.fill}" if self.fill and self.kind == "pad" else ""
        return f"{how} of {self.image_size}px ({self.interpolation}{fill}), RGB, normalised with mean/std"


def pad_to_square(
    image: Image.Image, size: int, resample: Image.Resampling = Image.Resampling.BICUBIC, fill: int = 0
) -> Image.Image:
    """Resize so the longest side is `size` (aspect kept) and centre it on a `size` x `size` square of grey
    level `fill` (black by default)."""
    image = image.convert("RGB")
    w, h = image.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), resample)
    canvas = Image.new("RGB", (size, size), (fill, fill, fill))
    canvas.paste(image, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def resize_center_crop(
    image: Image.Image, size: int, resample: Image.Resampling = Image.Resampling.BICUBIC
) -> Image.Image:
    """open_clip's eval geometry: shortest side to `size`, then the centre `size` x `size` crop."""
    image = image.convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return image.crop((left, top, left + size, top + size))


def stretch_to_square(
    image: Image.Image, size: int, resample: Image.Resampling = Image.Resampling.BICUBIC
) -> Image.Image:
    """Resize to `size` x `size` whatever the aspect: no padding, no crop, shapes distorted."""
    image = image.convert("RGB")
    return image if image.size == (size, size) else image.resize((size, size), resample)


_GEOMETRY = {"pad": pad_to_square, "openclip": resize_center_crop, "stretch": stretch_to_square}


class Geometry:
    """Picklable PIL -> square PIL step (DataLoader workers need to pickle it)."""

    def __init__(self, pre: Preprocess) -> None:
        self.pre = pre
        self.fn = _GEOMETRY[pre.kind]

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.pre.fill and self.pre.kind == "pad":
            return pad_to_square(image, self.pre.image_size, _RESAMPLE[self.pre.interpolation], self.pre.fill)
        return self.fn(image, self.pre.image_size, _RESAMPLE[self.pre.interpolation])


def to_uint8(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> uint8 tensor [3,H,W]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


def normalize_uint8(pixels: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 [...,3,H,W] -> float32 normalised with the model's mean/std."""
    mean = torch.tensor(pre.mean, dtype=torch.float32, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32, device=pixels.device).view(3, 1, 1)
    return (pixels.float().div_(255.0) - mean) / std


class EvalTransform:
    """Eval preprocessing: PIL image -> float32 [3,S,S] ready for the image tower."""

    def __init__(self, pre: Preprocess) -> None:
        self.pre = pre
        self.geometry = Geometry(pre)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return normalize_uint8(to_uint8(self.geometry(image)), self.pre)


def build_transform(pre: Preprocess) -> Callable[[Image.Image], torch.Tensor]:
    return EvalTransform(pre)


class TrainAugment:
    """Training-time augmentation of the cached uint8 squares: near-1 RandomResizedCrop, then RandAugment.

    Why on the uint8 square: geometry runs once per image (`data.cache_images`) and augmentation per step on
    the small square, as the seed's CLIP runs cropped their pre-padded 224px files. Draws come from a
    generator seeded by (seed, epoch, sample index), so a sample looks the same whichever rank or resumed
    process sees it: resume and DDP stay exact. No flip anywhere (left/right and facing carry meaning).
    """

    def __init__(
        self,
        size: int,
        seed: int,
        crop_scale: tuple[float, float] | None = None,
        crop_ratio: tuple[float, float] = (0.75, 1.33),
        crop_interpolation: str = "bicubic",
        randaugment: dict[str, Any] | None = None,
    ) -> None:
        from trafficsearch.data.randaugment import (
            RandAugmentConfig,
            RandomAugment,
            random_resized_crop_near_one,
        )

        self.seed = seed
        self.crop = (
            random_resized_crop_near_one(size, tuple(crop_scale), tuple(crop_ratio), crop_interpolation)
            if crop_scale is not None
            else None
        )
        self.randaugment = RandomAugment(RandAugmentConfig.from_dict(randaugment)) if randaugment else None

    @property
    def active(self) -> bool:
        return self.crop is not None or self.randaugment is not None

    def generator(self, epoch: int, index: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + index)

    def one(self, pixels: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        """Augment one uint8 [3,S,S] square; deterministic in (seed, epoch, index)."""
        gen = self.generator(epoch, index)
        if self.crop is not None:
            pixels = self.crop(pixels, gen)
        if self.randaugment is not None:
            pixels = self.randaugment(pixels, gen)
        return pixels

    def batch(self, pixels: torch.Tensor, epoch: int, indices: list[int]) -> torch.Tensor:
        """Augment a uint8 batch [B,3,S,S] whose rows are the samples `indices`."""
        if not self.active:
            return pixels
        return torch.stack([self.one(p, epoch, i) for p, i in zip(pixels, indices, strict=True)])
