"""The competition directory layout (docs/competition.md), so every command finds files the same way.

    ROOT/train/train_images/*.jpg   ROOT/train/train_label.txt
    ROOT/val/val_images/*.jpg       ROOT/val/val_label.txt
    ROOT/test/test_images/*.jpg     ROOT/test/test_text.txt   (+ test_label.txt for synthetic test sets)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Split:
    """Paths of one split: its images folder, label file and (test only) query file."""

    root: Path
    name: str

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def images(self) -> Path:
        return self.dir / f"{self.name}_images"

    @property
    def labels(self) -> Path:
        return self.dir / f"{self.name}_label.txt"

    @property
    def queries(self) -> Path:
        return self.dir / f"{self.name}_text.txt"


def split(root: str | Path, name: str) -> Split:
    return Split(Path(root), name)
