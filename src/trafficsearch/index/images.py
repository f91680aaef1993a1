"""Gallery images: list them, and decode any of them into a safe RGB picture or a reason to skip it.

Real galleries hold the odd grayscale, CMYK, 16-bit, transparent, truncated or enormous file. The build must
never die on one: `load_rgb` either returns an RGB image small enough to preprocess, or raises `SkipImage`
with a one-line reason that ends up in `skipped.jsonl`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
)
# Above this many pixels we refuse to decode at full size (a 3-channel 64 MP image is ~200 MB of RAM).
DEFAULT_MAX_PIXELS = 64_000_000
# Decoded images are shrunk to at most this side before preprocessing: the model sees a few hundred pixels.
WORKING_SIDE = 1024


class SkipImage(Exception):
    """The image cannot be used; the message says why (kept in skipped.jsonl)."""


def list_images(root: Path) -> list[Path]:
    """Image files under `root` (recursive, by suffix), sorted by relative POSIX path so ids are stable."""
    found = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def expand_image_args(items: Iterable[Path]) -> list[Path]:
    """Files as given plus the images inside any directories, in a stable order, without duplicates."""
    out: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        paths = list_images(item) if item.is_dir() else [item]
        for path in paths:
            resolved = path.resolve()
            if resolved not in seen:
                seen.add(resolved)
                out.append(resolved)
    return out


def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit / int32 / float images: scale the real range to 8 bits (PIL's convert would clip to 255)."""
    array = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        array = array / 257.0
    else:
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        array = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    return Image.fromarray(np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any PIL mode to RGB; transparency is composited over `background` rather than turned black."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _high_bit_depth_to_l(image)
    has_alpha = (
        image.mode in ("RGBA", "LA", "PA", "RGBa", "La")
        or (image.mode == "P" and "transparency" in image.info)
        or (image.mode in ("L", "RGB") and "transparency" in image.info)
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def load_rgb(
    path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None
) -> tuple[Image.Image, int, int]:
    """Decode `path` to RGB; returns (image, original width, original height) or raises SkipImage.

    Huge JPEGs are decoded at reduced scale (draft mode), other formats over `max_pixels` are skipped
    before any pixel is decoded, so a decompression bomb costs nothing. With `min_side`, a JPEG much larger
    than the model needs is DCT-decoded at 1/2..1/8 scale, never below `min_side` on either side (pass twice
    the model's input size: the resize that follows then sees the same detail, at a fraction of the cost).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width <= 0 or height <= 0:
                    raise SkipImage(f"empty image ({width}x{height})")
                if width * height > max_pixels:
                    if image.format == "JPEG":  # decode at 1/2..1/8 scale: never holds the full bitmap
                        scale = min(WORKING_SIDE / max(width, height), (max_pixels / (width * height)) ** 0.5)
                        image.draft("RGB", (max(1, int(width * scale / 2)), max(1, int(height * scale / 2))))
                    if image.size[0] * image.size[1] > max_pixels:
                        raise SkipImage(
                            f"too large: {width}x{height} = {width * height} pixels > max_pixels {max_pixels}"
                        )
                elif min_side and image.format == "JPEG" and min(width, height) >= 2 * min_side:
                    image.draft("RGB", (min_side, min_side))
                image.load()
                image = ImageOps.exif_transpose(image) or image
                if max(image.size) > WORKING_SIDE:
                    image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BILINEAR)
                return to_rgb(image), width, height
    except SkipImage:
        raise
    except FileNotFoundError:
        raise SkipImage("file not found") from None
    except Image.DecompressionBombError as exc:
        raise SkipImage(f"decompression bomb: {exc}") from None
    except Image.UnidentifiedImageError:
        raise SkipImage("not a readable image (unknown or corrupt format)") from None
    except (OSError, ValueError, SyntaxError, MemoryError) as exc:
        raise SkipImage(f"cannot decode: {type(exc).__name__}: {exc}") from None
