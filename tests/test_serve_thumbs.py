"""Thumbnails: aspect kept, never enlarged, cached by (file, mtime, size), bounded LRU, bad files refused."""

from __future__ import annotations

import io
import os
from pathlib import Path

import httpx
import pytest
from PIL import Image

from trafficsearch.serve.app import create_app
from trafficsearch.serve.server import serve_in_thread
from trafficsearch.serve.thumbs import ThumbnailCache, make_thumbnail
from trafficsearch.testing.fake_engine import FakeEngine


def _image(path: Path, size: tuple[int, int], color: str = "red") -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def test_thumbnail_keeps_aspect_and_never_enlarges(tmp_path: Path) -> None:
    wide = _image(tmp_path / "wide.png", (400, 100))
    assert _size(make_thumbnail(wide, 200)) == (200, 50)
    small = _image(tmp_path / "small.png", (40, 30))
    assert _size(make_thumbnail(small, 200)) == (40, 30)


def test_rgba_and_palette_images_become_jpeg(tmp_path: Path) -> None:
    rgba = tmp_path / "a.png"
    Image.new("RGBA", (64, 64), (255, 0, 0, 128)).save(rgba)
    palette = tmp_path / "p.png"
    Image.new("P", (64, 64), 3).save(palette)
    for path in (rgba, palette):
        data = make_thumbnail(path, 32)
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG" and image.size == (32, 32)


def test_cache_hits_evicts_lru_and_notices_changed_files(tmp_path: Path) -> None:
    paths = [_image(tmp_path / f"{i}.png", (300, 300), c) for i, c in enumerate(["red", "green", "blue"])]
    one = len(make_thumbnail(paths[0], 128))
    cache = ThumbnailCache(max_bytes=int(one * 2.5))  # room for two thumbnails
    for path in paths[:2]:
        cache.get(path, 128)
    assert (cache.hits, cache.misses, len(cache)) == (0, 2, 2)
    cache.get(paths[0], 128)
    assert cache.hits == 1
    cache.get(paths[2], 128)  # evicts paths[1], the least recently used
    assert len(cache) == 2
    cache.get(paths[0], 128)
    assert cache.hits == 2
    cache.get(paths[1], 128)
    assert cache.misses == 4
    # A replaced file (new mtime) is re-encoded, not served stale.
    _image(paths[0], (300, 300), "yellow")
    stat = paths[0].stat()
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    data = cache.get(paths[0], 16)
    with Image.open(io.BytesIO(data)) as image:
        r, g, b = image.convert("RGB").getpixel((8, 8))
    assert r > 200 and g > 200 and b < 80


def test_undecodable_file_is_404_not_500(tmp_path: Path) -> None:
    engine = FakeEngine.create(tmp_path / "g", count=4)
    engine.image_path(1).write_bytes(b"this is not a JPEG")
    with serve_in_thread(create_app(engine)) as url:
        response = httpx.get(f"{url}/thumbs/1", timeout=10)
        assert response.status_code == 404 and "cannot be decoded" in response.json()["detail"][0]["msg"]
        assert httpx.get(f"{url}/thumbs/2", timeout=10).status_code == 200


@pytest.mark.parametrize("size", [16, 1024])
def test_size_limits_are_inclusive(tmp_path: Path, size: int) -> None:
    engine = FakeEngine.create(tmp_path / "g", count=2)
    with serve_in_thread(create_app(engine)) as url:
        response = httpx.get(f"{url}/thumbs/0?size={size}", timeout=10)
    assert response.status_code == 200
    assert max(_size(response.content)) == min(size, max(_size(engine.image_path(0).read_bytes())))
