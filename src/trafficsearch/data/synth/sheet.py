"""A contact sheet: sample crops with their captions underneath, so a person can check the data by eye."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from trafficsearch.data.labels import read_labels
from trafficsearch.data.records import Record
from trafficsearch.errors import DataError
from trafficsearch.ioutil import atomic_write_bytes

CELL_W, IMG_H, TEXT_LINES, LINE_H = 250, 220, 7, 11


def _labels_and_images(
    split_dir_or_labels: str | Path | Sequence[Record], images_dir: str | Path | None
) -> tuple[list[Record], Path]:
    if isinstance(split_dir_or_labels, (str, Path)):
        src = Path(split_dir_or_labels)
        if src.is_dir():
            labels = sorted(src.glob("*_label.txt"))
            if not labels:
                raise DataError("no *_label.txt file in the folder", path=src)
            records = read_labels(labels[0]).records
            images = (
                Path(images_dir)
                if images_dir
                else labels[0].with_name(labels[0].name.replace("_label.txt", "_images"))
            )
        else:
            records = read_labels(src).records
            images = (
                Path(images_dir) if images_dir else src.parent / src.name.replace("_label.txt", "_images")
            )
    else:
        records = list(split_dir_or_labels)
        if images_dir is None:
            raise DataError("images_dir is needed when records are given")
        images = Path(images_dir)
    return records, images


def write_contact_sheet(
    split_dir_or_labels: str | Path | Sequence[Record],
    images_dir: str | Path | None = None,
    out_png: str | Path = "contact_sheet.png",
    n: int = 24,
    seed: int = 0,
    columns: int = 6,
) -> Path:
    """Write a PNG grid of `n` random samples (half vehicles, half pedestrians when both exist)."""
    records, images = _labels_and_images(split_dir_or_labels, images_dir)
    rng = np.random.default_rng(seed)
    by_kind = {k: [r for r in records if r.kind == k] for k in ("vehicle", "pedestrian")}
    picked: list[Record] = []
    for kind, pool in by_kind.items():
        share = n // 2 if all(by_kind.values()) else n
        share = n - len(picked) if kind == "pedestrian" else share
        take = min(share, len(pool))
        picked += [pool[i] for i in sorted(rng.choice(len(pool), size=take, replace=False))] if take else []
    rows = max(1, -(-len(picked) // columns))
    cell_h = IMG_H + TEXT_LINES * LINE_H + 6
    sheet = Image.new("RGB", (columns * CELL_W, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, record in enumerate(picked):
        x, y = (k % columns) * CELL_W, (k // columns) * cell_h
        path = images / record.image
        if path.is_file():
            with Image.open(path) as im:
                im = im.convert("RGB")
                scale = min((CELL_W - 10) / im.width, IMG_H / im.height, 2.0)
                im = im.resize(
                    (max(1, int(im.width * scale)), max(1, int(im.height * scale))), Image.Resampling.NEAREST
                )
                sheet.paste(im, (x + (CELL_W - im.width) // 2, y + IMG_H - im.height))
        else:
            draw.text((x + 5, y + IMG_H // 2), f"missing {record.image}", fill=(200, 0, 0), font=font)
        lines = textwrap.wrap(record.text, width=40)[:TEXT_LINES]
        for j, line in enumerate(lines):
            draw.text((x + 4, y + IMG_H + 3 + j * LINE_H), line, fill=(0, 0, 0), font=font)
    out = Path(out_png)
    buf = io.BytesIO()
    sheet.save(buf, "PNG")
    atomic_write_bytes(out, buf.getvalue())
    return out
