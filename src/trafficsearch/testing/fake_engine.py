"""A small stand-in search engine over generated images: tests, benchmarks and page work without a model.

It has the `SearchEngine` interface (search, image_path, info) and scores by word overlap between the
query and each image's caption, so results are meaningful ("white" finds white vehicles) and exact.
It records every `search` call, which is how tests see that requests were micro-batched.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {
    "black": (20, 20, 20),
    "blue": (40, 80, 200),
    "brown": (120, 70, 30),
    "green": (40, 150, 60),
    "grey": (128, 128, 128),
    "red": (200, 40, 40),
    "white": (240, 240, 240),
    "yellow": (230, 200, 40),
}
VEHICLE_TYPES = ("Bus", "Microbus", "Minivan", "SUV", "Sedan", "Truck")
_WORD = re.compile(r"[a-z0-9]+")


@dataclass
class FakeHit:
    id: int
    name: str
    score: float
    kind: str
    path: str


@dataclass(frozen=True)
class _Item:
    name: str
    kind: str
    caption: str
    words: frozenset[str]


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


class FakeEngine:
    """Word-overlap search over `count` generated JPEG crops written to `root`."""

    def __init__(self, root: Path, items: list[_Item], delay_s: float = 0.0) -> None:
        self.gallery_root = root
        self.items = items
        self.delay_s = delay_s
        self.calls: list[tuple[tuple[str, ...], int, str | None, bool]] = []
        self._lock = threading.Lock()

    @classmethod
    def create(cls, root: str | Path, count: int = 24, seed: int = 0, delay_s: float = 0.0) -> FakeEngine:
        """Write `count` images (half vehicles, half pedestrians) under `root` and index them."""
        rng = random.Random(seed)
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        items = []
        for i in range(count):
            color = rng.choice(sorted(COLORS))
            if i % 2 == 0:
                kind = "vehicle"
                name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(10)) + ".jpg"
                caption = f"This is a {color} {rng.choice(VEHICLE_TYPES)}."
                size = (rng.randint(120, 200), rng.randint(90, 140))
            else:
                kind = "pedestrian"
                name = f"{100_000 + i:06d}.jpg"
                gender = rng.choice(("male", "female"))
                caption = f"A {gender} pedestrian in a {color} shirt."
                size = (rng.randint(50, 80), rng.randint(130, 200))
            path = root / name
            if not path.exists():
                image = Image.new("RGB", size, (200, 210, 220))
                draw = ImageDraw.Draw(image)
                w, h = size
                draw.rectangle([w // 6, h // 6, w - w // 6, h - h // 6], fill=COLORS[color])
                image.save(path, quality=90)
            items.append(_Item(name, kind, caption, _words(caption)))
        return cls(root, items, delay_s=delay_s)

    def search(
        self,
        texts: Sequence[str],
        k: int = 10,
        kind: str | None = None,
        where: dict | None = None,
        rerank: bool = False,
    ) -> list[list[FakeHit]]:
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        with self._lock:
            self.calls.append((tuple(texts), k, kind, rerank))
        if self.delay_s:
            time.sleep(self.delay_s)
        out = []
        for text in texts:
            query = _words(text)
            scored = []
            for image_id, item in enumerate(self.items):
                if kind is not None and item.kind != kind:
                    continue
                overlap = len(query & item.words) / max(1, len(query | item.words))
                scored.append((-overlap, image_id))
            scored.sort()
            out.append(
                [
                    FakeHit(
                        i,
                        self.items[i].name,
                        -s,
                        self.items[i].kind,
                        str(self.gallery_root / self.items[i].name),
                    )
                    for s, i in scored[:k]
                ]
            )
        return out

    def image_path(self, image_id: int) -> Path:
        if not 0 <= image_id < len(self.items):
            raise KeyError(image_id)
        return self.gallery_root / self.items[image_id].name

    def info(self) -> dict:
        return {
            "count": len(self.items),
            "model": "fake-word-overlap",
            "gallery_root": str(self.gallery_root),
        }
