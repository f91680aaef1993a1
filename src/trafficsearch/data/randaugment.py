"""The seed's training-time image augmentation: BLIP's RandomAugment subset and a near-1 RandomResizedCrop.

Why these and nothing else: the winning recipe fed BLIP `RandomAugment(N=2, M=5)` over nine ops and fed the
CLIP runs only a RandomResizedCrop with scale close to 1 (docs seed-recipe.md section 1). There is **no
horizontal flip** anywhere: "facing the camera / sideways / back" and left/right placement carry meaning.

RandomAugment semantics, as BLIP's `transform/randaugment.py` (identical in the seed):
- N ops are drawn **with replacement** from `RANDAUG_OPS`; each is then applied with probability 0.5.
- Magnitude M (0..MAX_LEVEL=10) maps to arguments:
  enhance factor (Brightness, Sharpness) = (M/10)*1.8 + 0.1, with no sign flip (BLIP flips no enhance op);
  shear = (M/10)*0.3 and translate = (M/10)*translate_const pixels, each with a random sign.
  **At M=5 the enhance factor is exactly 1.0, so Brightness and Sharpness are identities** (the seed's
  surprise): in the seed only AutoContrast, Equalize, shear and translate ever change the image.
- Shear and translate fill the uncovered area with grey (128,128,128); shear is about the top-left corner
  (cv2's matrix in BLIP), with bilinear resampling.
- translate_const is 10 **pixels at 224 px** in the seed. We scale it with the image side
  (offset = (M/10) * translate_const * side / translate_reference) so a 64-px demo model sees the same
  relative shift (about 2.2% of the side at M=5) instead of a shift 3.5 times larger.

Randomness: pass a `random.Random` or `torch.Generator` for reproducible draws; with none, Python's global
`random` is used (PyTorch seeds it differently in each DataLoader worker, so workers do not repeat).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from trafficsearch.errors import ConfigError

RANDAUG_OPS: tuple[str, ...] = (
    "Identity",
    "AutoContrast",
    "Brightness",
    "Sharpness",
    "Equalize",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
)
ENHANCE_OPS = frozenset({"Brightness", "Sharpness"})
SHEAR_OPS = frozenset({"ShearX", "ShearY"})
TRANSLATE_OPS = frozenset({"TranslateX", "TranslateY"})
MAX_LEVEL = 10.0
GREY_FILL: tuple[int, int, int] = (128, 128, 128)
SEED_TRANSLATE_CONST = 10.0  # pixels ...
SEED_IMAGE_SIZE = 224  # ... at this image side

Rng = random.Random | torch.Generator | None
ImageLike = Image.Image | torch.Tensor


class _Draw:
    """One interface over random.Random, torch.Generator and the global `random` module."""

    def __init__(self, rng: Rng) -> None:
        self.rng = rng

    def random(self) -> float:
        if isinstance(self.rng, torch.Generator):
            return float(torch.rand((), generator=self.rng).item())
        return (self.rng or random).random()

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()

    def index(self, n: int) -> int:
        if isinstance(self.rng, torch.Generator):
            return int(torch.randint(n, (), generator=self.rng).item())
        return (self.rng or random).randrange(n)


def enhance_factor(magnitude: float, max_level: float = MAX_LEVEL) -> float:
    """BLIP's enhance argument: (M/max)*1.8 + 0.1, in [0.1, 1.9]; 1.0 (identity) at M=5."""
    return (magnitude / max_level) * 1.8 + 0.1


def shear_amount(magnitude: float, max_level: float = MAX_LEVEL) -> float:
    """Unsigned shear factor: (M/max)*0.3, i.e. 0.15 at M=5."""
    return (magnitude / max_level) * 0.3


def translate_pixels(
    magnitude: float,
    side: int,
    translate_const: float = SEED_TRANSLATE_CONST,
    reference: int = SEED_IMAGE_SIZE,
    max_level: float = MAX_LEVEL,
) -> float:
    """Unsigned shift in pixels for an image side of `side`: 5 px at M=5 on 224 px, scaled linearly."""
    return (magnitude / max_level) * translate_const * side / reference


@dataclass(frozen=True)
class RandAugmentConfig:
    """Settings of `RandomAugment`; the defaults are the seed's BLIP training values (N=2, M=5)."""

    n: int = 2
    magnitude: float = 5.0
    prob: float = 0.5
    ops: tuple[str, ...] = RANDAUG_OPS
    translate_const: float = SEED_TRANSLATE_CONST
    translate_reference: int = SEED_IMAGE_SIZE
    fill: tuple[int, int, int] = field(default=GREY_FILL)
    max_level: float = MAX_LEVEL

    def __post_init__(self) -> None:
        def bad(name: str, message: str) -> ConfigError:
            return ConfigError(message, field=f"randaugment.{name}")

        if self.n < 0:
            raise bad("n", f"number of ops must be >= 0, got {self.n}")
        if not 0 <= self.magnitude <= self.max_level:
            raise bad("magnitude", f"magnitude must be in [0, {self.max_level:g}], got {self.magnitude}")
        if not 0.0 <= self.prob <= 1.0:
            raise bad("prob", f"probability must be in [0, 1], got {self.prob}")
        if not self.ops:
            raise bad("ops", "at least one op is needed")
        unknown = [op for op in self.ops if op not in RANDAUG_OPS]
        if unknown:
            raise bad("ops", f"unknown op(s) {', '.join(unknown)}; expected some of {', '.join(RANDAUG_OPS)}")
        if self.translate_const < 0 or self.translate_reference <= 0:
            raise bad("translate_const", "translate_const must be >= 0 and translate_reference > 0")
        if len(self.fill) != 3 or not all(0 <= c <= 255 for c in self.fill):
            raise bad("fill", f"fill must be three values in 0..255, got {self.fill}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RandAugmentConfig:
        """Build from a YAML mapping; unknown keys are a ConfigError (typos must not pass silently)."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ConfigError(
                f"unknown key(s) {', '.join(extra)}; expected some of {', '.join(sorted(known))}",
                field="randaugment",
            )
        kwargs = dict(d)
        for key in ("ops", "fill"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


@dataclass(frozen=True)
class OpCall:
    """One op to apply, with its resolved argument (factor, shear or pixel shift; None if it takes none)."""

    name: str
    arg: float | None = None


def _affine(image: Image.Image, coeffs: tuple[float, ...], fill: tuple[int, int, int]) -> Image.Image:
    # PIL maps each output pixel (x, y) to the input (a x + b y + c, d x + e y + f).
    return image.transform(
        image.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR, fillcolor=fill
    )


def apply_op(image: Image.Image, call: OpCall, fill: tuple[int, int, int] = GREY_FILL) -> Image.Image:
    """Apply one resolved op to an RGB PIL image (same geometry as BLIP's cv2 matrices)."""
    name, arg = call.name, call.arg
    if name == "Identity":
        return image
    if name == "AutoContrast":
        return ImageOps.autocontrast(image)
    if name == "Equalize":
        return ImageOps.equalize(image)
    assert arg is not None, name
    if name == "Brightness":
        return ImageEnhance.Brightness(image).enhance(arg)
    if name == "Sharpness":
        return ImageEnhance.Sharpness(image).enhance(arg)
    if name == "ShearX":  # cv2 [[1, s, 0], [0, 1, 0]]: out(x, y) = in(x - s y, y)
        return _affine(image, (1.0, -arg, 0.0, 0.0, 1.0, 0.0), fill)
    if name == "ShearY":  # cv2 [[1, 0, 0], [s, 1, 0]]: out(x, y) = in(x, y - s x)
        return _affine(image, (1.0, 0.0, 0.0, -arg, 1.0, 0.0), fill)
    if name == "TranslateX":  # cv2 [[1, 0, -t], [0, 1, 0]]: out(x, y) = in(x + t, y)
        return _affine(image, (1.0, 0.0, arg, 0.0, 1.0, 0.0), fill)
    if name == "TranslateY":
        return _affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, arg), fill)
    raise ConfigError(f"unknown op {name!r}", field="randaugment.ops")


def _to_pil(image: ImageLike) -> Image.Image:
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a uint8 tensor [3,H,W], got {image.dtype} {tuple(image.shape)}")
        return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy(), "RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _like(result: Image.Image, original: ImageLike) -> ImageLike:
    if isinstance(original, torch.Tensor):
        return torch.from_numpy(np.asarray(result, dtype=np.uint8).copy()).permute(2, 0, 1)
    return result


class RandomAugment:
    """BLIP's RandomAugment over `RANDAUG_OPS`; takes and returns a PIL image or a uint8 [3,H,W] tensor.

    `rng` given at construction is used when a call passes none; leave it None inside DataLoader workers
    (a copied generator would make every worker draw the same augmentations).
    """

    def __init__(self, config: RandAugmentConfig | None = None, *, rng: Rng = None, **overrides: Any) -> None:
        base = config or RandAugmentConfig()
        current = {f.name: getattr(base, f.name) for f in fields(base)}
        self.config = RandAugmentConfig.from_dict({**current, **overrides}) if overrides else base
        self.rng = rng

    def plan(self, size: tuple[int, int], rng: Rng = None) -> list[OpCall]:
        """Draw the ops for one image of (width, height), in BLIP's draw order; skipped ops are left out."""
        c = self.config
        draw = _Draw(rng if rng is not None else self.rng)
        sampled = [c.ops[draw.index(len(c.ops))] for _ in range(c.n)]  # with replacement
        calls: list[OpCall] = []
        for name in sampled:
            if draw.random() > c.prob:
                continue
            if name in ENHANCE_OPS:
                calls.append(OpCall(name, enhance_factor(c.magnitude, c.max_level)))
            elif name in SHEAR_OPS or name in TRANSLATE_OPS:
                if name in SHEAR_OPS:
                    amount = shear_amount(c.magnitude, c.max_level)
                else:
                    side = size[0] if name == "TranslateX" else size[1]
                    amount = translate_pixels(
                        c.magnitude, side, c.translate_const, c.translate_reference, c.max_level
                    )
                calls.append(OpCall(name, -amount if draw.random() > 0.5 else amount))
            else:
                calls.append(OpCall(name))
        return calls

    def __call__(self, image: ImageLike, rng: Rng = None) -> ImageLike:
        pil = _to_pil(image)
        for call in self.plan(pil.size, rng):
            pil = apply_op(pil, call, self.config.fill)
        return _like(pil, image)

    def __repr__(self) -> str:
        c = self.config
        return f"RandomAugment(n={c.n}, magnitude={c.magnitude:g}, prob={c.prob:g}, ops={list(c.ops)})"


_INTERPOLATIONS = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}


class NearOneResizedCrop:
    """torchvision's RandomResizedCrop, with the seed's near-1 scale, drawing from a passed generator.

    The crop box is sampled exactly as `torchvision.transforms.RandomResizedCrop.get_params` does (10 tries
    of area in `scale` and log-uniform aspect in `ratio`, else a centre crop), then
    `torchvision.transforms.functional.resized_crop` does the work. interpolation "random" picks bilinear or
    bicubic per image, as timm's `create_transform` in the ViT-H-14 runs.
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.9, 1.0),
        ratio: tuple[float, float] = (0.75, 1.33),
        interpolation: str = "bicubic",
        *,
        rng: Rng = None,
    ) -> None:
        if size <= 0:
            raise ConfigError(f"crop size must be positive, got {size}", field="crop.size")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ConfigError(f"scale must satisfy 0 < low <= high <= 1, got {scale}", field="crop.scale")
        if not 0 < ratio[0] <= ratio[1]:
            raise ConfigError(f"ratio must satisfy 0 < low <= high, got {ratio}", field="crop.ratio")
        if interpolation not in (*_INTERPOLATIONS, "random"):
            raise ConfigError(
                f"unknown interpolation {interpolation!r}; expected bicubic, bilinear or random",
                field="crop.interpolation",
            )
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)
        self.interpolation, self.rng = interpolation, rng

    def params(self, width: int, height: int, rng: Rng = None) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the crop box, torchvision's algorithm."""
        draw = _Draw(rng if rng is not None else self.rng)
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * draw.uniform(*self.scale)
            aspect = math.exp(draw.uniform(log_lo, log_hi))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = draw.index(height - h + 1)
                left = draw.index(width - w + 1)
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: ImageLike, rng: Rng = None) -> ImageLike:
        draw_rng = rng if rng is not None else self.rng
        width, height = image.size if isinstance(image, Image.Image) else (image.shape[-1], image.shape[-2])
        top, left, h, w = self.params(width, height, draw_rng)
        name = self.interpolation
        if name == "random":
            name = ("bilinear", "bicubic")[_Draw(draw_rng).index(2)]
        return TF.resized_crop(
            image, top, left, h, w, [self.size, self.size], _INTERPOLATIONS[name], antialias=True
        )

    def __repr__(self) -> str:
        return (
            f"NearOneResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
            f"interpolation={self.interpolation})"
        )


def random_resized_crop_near_one(
    size: int,
    scale: tuple[float, float] = (0.9, 1.0),
    ratio: tuple[float, float] = (0.75, 1.33),
    interpolation: str = "bicubic",
    rng: Rng = None,
) -> NearOneResizedCrop:
    """The CLIP runs' only augmentation: (0.95, 1.0) + "random" interpolation for ViT-H-14 (timm),
    (0.9, 1.0) + bicubic for the XLM-R model (torchvision default)."""
    return NearOneResizedCrop(size, scale, ratio, interpolation, rng=rng)
