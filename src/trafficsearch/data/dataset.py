"""Training data: labelled images of a competition split, and a seeded batch order that resume can replay.

The batch order of epoch e is a pure function of (seed, e), so a run resumed at batch k of epoch e sees
exactly the batches an uninterrupted run would have seen. Under DDP each rank takes its slice of every
global batch, so the global batch (and the result) does not depend on the number of processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from trafficsearch.data.labels import read_labels
from trafficsearch.data.layout import split
from trafficsearch.data.prompts import VehicleForm, expand_records
from trafficsearch.data.records import Record
from trafficsearch.data.transforms import Geometry, Preprocess, to_uint8
from trafficsearch.errors import DataError


def load_split(
    root: str | Path, name: str, limit: int | None = None, skipped: list[DataError] | None = None
) -> tuple[list[Record], Path]:
    """Records of split `name` under a competition-layout root (at most `limit`), and its images folder.

    With a `skipped` list, bad label lines are appended to it instead of raised (training's on_error: skip).
    """
    sp = split(root, name)
    if not sp.labels.is_file():
        raise DataError(
            f"no {name} label file (expected {sp.labels.name} in the competition layout)", path=sp.labels
        )
    if not sp.images.is_dir():
        raise DataError(f"no {name} images folder", path=sp.images)
    labels = read_labels(sp.labels, on_error="skip" if skipped is not None else "raise")
    if skipped is not None:
        skipped.extend(labels.skipped)
    records = labels.records
    if limit is not None and limit < len(records):
        # an evenly spread subset, in file order: label files group kinds (vehicles first), a prefix would not
        keep = torch.linspace(0, len(records) - 1, limit).round().long().unique().tolist()
        records = [records[i] for i in keep]
    return records, sp.images


@dataclass
class TrainPairs:
    """Training pairs over a split: pair p is image `image_of[p]` (a row of `images`) with caption `texts[p]`.

    Why pairs apart from images: prompt augmentation (data.prompts) makes several pairs per image; the image
    is decoded and cached once, and its pairs share an image id (positives for many-to-many targets / BLIP).
    """

    images: list[Record]  # one record per distinct image (the first that names it), the cache's rows
    records: list[Record]  # the record of each pair (its image's annotation)
    texts: list[str]
    image_of: list[int]

    def __len__(self) -> int:
        return len(self.texts)


def make_pairs(
    records: Sequence[Record],
    *,
    vehicles: bool = False,
    pedestrians: bool = False,
    vehicle_form: VehicleForm = "in_place",
) -> TrainPairs:
    """Each record's caption pair first, then its prompt pairs (data/prompts.py); raw queries stay raw."""
    rows: dict[str, int] = {}
    images: list[Record] = []
    out_records, texts, image_of = [], [], []
    pairs = expand_records(records, vehicles=vehicles, pedestrians=pedestrians, vehicle_form=vehicle_form)
    for record, text in pairs:
        if record.image not in rows:
            rows[record.image] = len(images)
            images.append(record)
        out_records.append(record)
        texts.append(text)
        image_of.append(rows[record.image])
    return TrainPairs(images, out_records, texts, image_of)


class ImageDataset(Dataset):
    """Record images after the deterministic geometry, as uint8 [3,S,S] (normalised later, on the batch)."""

    def __init__(self, records: Sequence[Record], images_dir: str | Path, pre: Preprocess) -> None:
        self.records = list(records)
        self.images_dir = Path(images_dir)
        self.geometry: Callable[[Image.Image], Image.Image] = Geometry(pre)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        record = self.records[index]
        path = self.images_dir / record.image
        try:
            with Image.open(path) as image:
                pixels = to_uint8(self.geometry(image))
        except FileNotFoundError:
            raise DataError(
                "image listed in the labels is missing", path=path, line=record.line or None
            ) from None
        except OSError as exc:
            raise DataError(f"cannot read image: {exc}", path=path, line=record.line or None) from None
        return pixels, index


class _Tolerant(Dataset):
    """An ImageDataset whose unreadable images come back as a reason (zeros for pixels) instead of raising."""

    def __init__(self, dataset: ImageDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        try:
            pixels, _ = self.dataset[index]
        except DataError as exc:
            size = self.dataset.geometry.pre.image_size  # type: ignore[attr-defined]
            return torch.zeros(3, size, size, dtype=torch.uint8), index, exc.message
        return pixels, index, ""


def _decoded(
    dataset: ImageDataset,
    workers: int,
    failed: list[tuple[int, DataError]] | None,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 pixels, row indices) per batch of 64; failures go to `failed` when given, else raise.
    DataLoader draws its worker seed from `generator` (None: the global RNG, as preload always has)."""
    source: Dataset = dataset if failed is None else _Tolerant(dataset)
    loader = DataLoader(source, batch_size=64, shuffle=False, num_workers=workers, generator=generator)
    for item in loader:
        pixels, index = item[0], item[1]
        if failed is not None:
            for row, reason in zip(index.tolist(), item[2], strict=True):
                if reason:
                    record = dataset.records[row]
                    path = dataset.images_dir / record.image
                    failed.append((row, DataError(reason, path=path, line=record.line or None)))
        yield pixels, index


def preload(
    dataset: ImageDataset,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
    failed: list[tuple[int, DataError]] | None = None,
) -> torch.Tensor:
    """Decode every image once into one uint8 tensor [N,3,S,S] (~12 KiB per 64px image).

    With a `failed` list, an unreadable image is appended to it as (row, DataError) and its row left zero,
    instead of stopping at the first one (training's on_error: skip)."""
    size = dataset.geometry.pre.image_size  # type: ignore[attr-defined]
    out = torch.empty(len(dataset), 3, size, size, dtype=torch.uint8)
    for pixels, index in _decoded(dataset, workers, failed):
        out[index] = pixels
        if progress is not None:
            progress(len(index))
    return out


def scan_images(
    dataset: ImageDataset,
    failed: list[tuple[int, DataError]],
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Decode every image once, keeping nothing: which rows are unreadable (when images are not cached).
    Leaves the global RNG alone, so a run with nothing to skip trains as one without the check."""
    for _, index in _decoded(dataset, workers, failed, torch.Generator()):
        if progress is not None:
            progress(len(index))


class EpochBatches:
    """Seeded, resumable batch order: batches(epoch, start) yields this rank's index lists from batch `start`.

    drop_last: every step sees a full batch, so the contrastive loss always has the same number of negatives.
    With `micro_steps` > 1 (gradient accumulation) a global batch is cut into that many micro-batches and
    each rank takes its slice of every micro-batch, so global micro-batch j is the same set of samples for
    any number of ranks (the loop cuts a rank's list into `micro_steps` equal chunks).
    """

    def __init__(
        self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, micro_steps: int = 1
    ) -> None:
        if batch_size % (world_size * micro_steps):
            raise ValueError(
                f"batch size {batch_size} is not divisible by world size {world_size} x {micro_steps} "
                "micro-steps"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.micro_steps = rank, world_size, micro_steps

    def __len__(self) -> int:
        return self.n // self.batch_size

    def order(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.n, generator=gen)

    def batches(self, epoch: int, start: int = 0) -> Iterator[list[int]]:
        perm = self.order(epoch)
        micro = self.batch_size // self.micro_steps
        per_rank = micro // self.world_size
        for b in range(start, len(self)):
            batch = perm[b * self.batch_size : (b + 1) * self.batch_size]
            yield [
                i
                for j in range(self.micro_steps)
                for i in batch[
                    j * micro + self.rank * per_rank : j * micro + (self.rank + 1) * per_rank
                ].tolist()
            ]
