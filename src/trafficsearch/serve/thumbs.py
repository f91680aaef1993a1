"""JPEG thumbnails made on first request and kept in a bounded in-memory LRU cache.

A result grid asks for tens of thumbnails per query and the same images come back query after query;
decoding and resizing a camera crop costs milliseconds, a cache hit microseconds. The cache is keyed
by (path, mtime, size) so a replaced file is never served stale.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image, ImageOps

MIN_SIZE = 16
MAX_SIZE = 1024
DEFAULT_SIZE = 256


def make_thumbnail(path: Path, size: int, quality: int = 85) -> bytes:
    """Fit the image in a size x size box (aspect kept, never enlarged) and encode it as JPEG."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality, optimize=True)
        return out.getvalue()


class ThumbnailCache:
    """Thread-safe LRU of encoded thumbnails, bounded by total bytes."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, path: Path, size: int) -> bytes:
        key = (str(path), path.stat().st_mtime_ns, size)
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return data
            self.misses += 1
        data = make_thumbnail(path, size)  # outside the lock: other thumbnails keep being served
        with self._lock:
            if key not in self._items and len(data) <= self.max_bytes:
                self._items[key] = data
                self._bytes += len(data)
                while self._bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= len(old)
        return data

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
