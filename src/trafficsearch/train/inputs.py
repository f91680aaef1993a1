"""What the loop feeds the model: a split's records under `data.on_error`, and the augmented batches.

Why skip-and-report (data.on_error: skip, the default): real train sets hold a few undecodable files (the
seed's had ~40 of 136,117) and one bad file should not cost a multi-hour run. Each left-out item is listed
with its file, line and reason in RUN_DIR/skipped.jsonl and counted in summary.json; more than
`data.max_bad_fraction` of a split is a broken data set, and the run stops with one line saying so.

Why batches in DataLoader workers: crop + RandAugment of a batch run in `data.workers` processes (pinned
memory on CUDA) while the model trains on the previous one. Augmentation draws from (seed, epoch, sample
index) only, so the batches are the same with any number of workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from trafficsearch.data.dataset import ImageDataset, load_split, preload, scan_images
from trafficsearch.data.records import Record
from trafficsearch.data.transforms import TrainAugment
from trafficsearch.errors import DataError
from trafficsearch.ioutil import atomic_write_text
from trafficsearch.train.config import Config

SKIPPED_FILE = "skipped.jsonl"


@dataclass
class SkipLog:
    """The items left out of a run (data.on_error: skip), per split; `check` enforces max_bad_fraction."""

    skip: bool
    max_bad_fraction: float
    rows: list[dict] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, cfg: Config) -> SkipLog:
        return cls(cfg.data.on_error == "skip", cfg.data.max_bad_fraction)

    def add(self, split: str, kind: str, errors: list[DataError]) -> None:
        for e in errors:
            row = {"split": split, "kind": kind, "file": e.path, "line": e.line, "reason": e.message}
            self.rows.append(row)

    def count(self, split: str) -> int:
        return sum(1 for r in self.rows if r["split"] == split)

    def write(self, run_dir: Path) -> None:
        if self.rows:
            atomic_write_text(run_dir / SKIPPED_FILE, "".join(json.dumps(r) + "\n" for r in self.rows))

    def check(self, run_dir: Path) -> None:
        """Raise DataError when a split has more bad items than its share allows (after write())."""
        for split, total in self.totals.items():
            bad = self.count(split)
            if total and bad / total > self.max_bad_fraction:
                raise DataError(
                    f"{bad} of {total} {split} items are unreadable images or bad label lines "
                    f"({100 * bad / total:.2f}% > data.max_bad_fraction {100 * self.max_bad_fraction:g}%); "
                    f"each is listed in {run_dir / SKIPPED_FILE}",
                    field="data.max_bad_fraction",
                )


def load_records(cfg: Config, split: str, limit: int | None, skips: SkipLog) -> tuple[list[Record], Path]:
    """A split's records; bad label lines go to `skips` under on_error: skip."""
    errors: list[DataError] | None = [] if skips.skip else None
    records, images = load_split(cfg.data.root, split, limit, errors)
    skips.add(split, "label", errors or [])
    skips.totals[split] = len(records) + len(errors or [])
    return records, images


def decode(
    records: list[Record],
    images_dir: Path,
    pre,  # noqa: ANN001 - data.transforms.Preprocess
    *,
    split: str,
    keep: bool,
    workers: int,
    skips: SkipLog,
    progress=None,  # noqa: ANN001 - Callable[[int], None]
) -> tuple[list[Record], torch.Tensor | None]:
    """Decode `records`' images once (kept as uint8 when `keep`); under skip, records whose image cannot be
    read are dropped (and logged), with their rows."""
    dataset = ImageDataset(records, images_dir, pre)
    if not skips.skip:
        return records, preload(dataset, workers, progress) if keep else None
    failed: list[tuple[int, DataError]] = []
    if keep:
        pixels: torch.Tensor | None = preload(dataset, workers, progress, failed)
    else:
        scan_images(dataset, failed, workers, progress)
        pixels = None
    if not failed:
        return records, pixels
    failed.sort(key=lambda item: item[0])
    skips.add(split, "image", [e for _, e in failed])
    bad = {row for row, _ in failed}
    rows = [i for i in range(len(records)) if i not in bad]
    return [records[i] for i in rows], pixels[rows] if pixels is not None else None


class AugmentedBatches(Dataset):
    """Item b: the b-th batch of an epoch as (augmented uint8 pixels [B,3,S,S], pair indices), built from the
    cached squares or decoded from files; what DataLoader workers run."""

    def __init__(
        self,
        index_lists: list[list[int]],
        image_of: list[int],
        augment: TrainAugment,
        epoch: int,
        cached: torch.Tensor | None,
        images: ImageDataset,
    ) -> None:
        self.index_lists, self.image_of, self.augment, self.epoch = index_lists, image_of, augment, epoch
        self.cached, self.images = cached, images

    def __len__(self) -> int:
        return len(self.index_lists)

    def __getitem__(self, b: int) -> tuple[torch.Tensor, list[int]]:
        idx = self.index_lists[b]
        rows = [self.image_of[i] for i in idx]
        if self.cached is not None:
            pixels = self.cached[rows]
        else:
            pixels = torch.stack([self.images[r][0] for r in rows])
        return self.augment.batch(pixels, self.epoch, idx), idx


def batch_loader(dataset: AugmentedBatches, workers: int, pin_memory: bool) -> DataLoader:
    """One batch per item (no collation), prefetched by `workers` processes (0: in this process).

    A DataLoader draws its workers' base seed from the global torch RNG, which BLIP's hard-negative sampling
    also draws from: with cached images the loop had no DataLoader, so it gets a private generator there and
    the global stream (and every result) stays what it was; reading files always went through one."""
    generator = torch.Generator() if dataset.cached is not None else None
    return DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        generator=generator,
    )
