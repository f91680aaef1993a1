"""Odd gallery files: each is either encoded (as sensible RGB) or listed in skipped.jsonl with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trafficsearch.index import build_index, open_index
from trafficsearch.index.images import SkipImage, load_rgb, to_rgb
from trafficsearch.testing.color import ColorModel

torch.set_num_threads(1)


def write_odd_gallery(root: Path) -> tuple[set[str], set[str]]:
    """(names that must be encoded, names that must be skipped)."""
    root.mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "rgb.jpg")
    Image.new("L", (40, 30), 90).save(root / "gray.jpg")
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(root / "cmyk.jpg")
    Image.fromarray(np.full((30, 40), 40000, dtype=np.uint16)).save(root / "deep16.png")
    rgba = Image.new("RGBA", (40, 30), (0, 0, 255, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 20, 30))
    rgba.save(root / "alpha.png")
    Image.new("LA", (40, 30), (50, 0)).save(root / "la.png")
    palette = Image.new("P", (40, 30), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.save(root / "palette.png", transparency=0)
    Image.new("RGB", (3000, 2000), (10, 200, 10)).save(root / "huge.jpg")  # decoded in draft mode
    Image.new("RGB", (1200, 1000), (10, 10, 10)).save(root / "huge.png")  # > max_pixels: refused
    full = root / "rgb.jpg"
    (root / "truncated.jpg").write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10)
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image, not listed")
    encoded = {
        "rgb.jpg",
        "gray.jpg",
        "cmyk.jpg",
        "deep16.png",
        "alpha.png",
        "la.png",
        "palette.png",
        "huge.jpg",
    }
    skipped = {"huge.png", "truncated.jpg", "corrupt.jpg", "empty.png"}
    return encoded, skipped


def test_bad_images_are_encoded_or_listed(tmp_path: Path) -> None:
    encoded, skipped = write_odd_gallery(tmp_path / "g")
    result = build_index(
        tmp_path / "g",
        tmp_path / "idx",
        ColorModel(),
        shard_size=5,
        workers=2,
        max_pixels=1_000_000,
        progress=False,
    )
    data = open_index(tmp_path / "idx")
    assert set(data.metadata.names) == encoded
    lines = [json.loads(line) for line in (tmp_path / "idx" / "skipped.jsonl").read_text().splitlines()]
    reasons = {item["path"]: item["reason"] for item in lines}
    assert set(reasons) == skipped
    assert "max_pixels" in reasons["huge.png"]
    assert result.manifest["n_skipped"] == len(skipped) and result.manifest["count"] == len(encoded)
    assert np.isfinite(np.asarray(data.vectors, dtype=np.float32)).all()
    row = data.metadata.names.index("huge.jpg")
    assert data.metadata.record(row)["width"] == 3000  # the original size is recorded, not the draft size


def test_conversions_keep_the_picture(tmp_path: Path) -> None:
    deep = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert np.asarray(to_rgb(deep))[0, :, 0].tolist() == [0, 127, 255]  # scaled, not clipped
    clear = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    assert np.asarray(to_rgb(clear)).tolist() == [[[255, 255, 255], [255, 255, 255]]]  # not black
    cmyk = to_rgb(Image.new("CMYK", (1, 1), (0, 255, 255, 0)))
    assert cmyk.mode == "RGB" and np.asarray(cmyk)[0, 0, 0] > 200
    Image.new("RGB", (5000, 400), (1, 2, 3)).save(tmp_path / "wide.jpg")
    image, width, height = load_rgb(tmp_path / "wide.jpg")
    assert (width, height) == (5000, 400) and max(image.size) <= 1024 and image.mode == "RGB"
    with pytest.raises(SkipImage, match="not found"):
        load_rgb(tmp_path / "missing.jpg")
