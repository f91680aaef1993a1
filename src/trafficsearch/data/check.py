"""Validate a labelled data set (labels + images) and summarise it, so problems surface before training."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from trafficsearch.data.labels import LabelSet, OnError, read_labels
from trafficsearch.data.records import Record
from trafficsearch.data.vocab import PEDESTRIAN_ATTRIBUTES
from trafficsearch.errors import DataError


@dataclass
class CheckReport:
    """What `trafficsearch check` found: the parsed labels, image problems and unlabelled files."""

    labels: LabelSet
    image_errors: list[DataError] = field(default_factory=list)
    unlabelled_images: list[str] = field(default_factory=list)
    images_checked: int = 0

    @property
    def kind_counts(self) -> Counter[str]:
        return Counter(r.kind for r in self.labels.records)

    def attribute_rates(self) -> dict[str, float]:
        """Share of pedestrians with each of the 21 attributes."""
        peds = [r.vector for r in self.labels.records if r.vector is not None]
        if not peds:
            return {}
        return {name: sum(v[i] for v in peds) / len(peds) for i, name in enumerate(PEDESTRIAN_ATTRIBUTES)}

    def vehicle_counts(self) -> dict[str, Counter[str]]:
        """How often each colour, brand and type occurs among vehicles."""
        out: dict[str, Counter[str]] = {"color": Counter(), "brand": Counter(), "type": Counter()}
        for r in self.labels.records:
            if r.vehicle is None:
                continue
            for part in out:
                value = getattr(r.vehicle, part)
                if value:
                    out[part][value] += 1
        return out

    @property
    def ok(self) -> bool:
        return not self.labels.skipped and not self.image_errors


def check_image(path: Path, record: Record, labels_path: Path) -> DataError | None:
    """None when the image exists and decodes fully; else an error naming the label line."""
    if not path.is_file():
        return DataError(f"image not found: {path}", path=labels_path, line=record.line, field="image")
    try:
        with Image.open(path) as img:
            img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return DataError(
            f"image unreadable: {path} ({type(exc).__name__}: {exc})",
            path=labels_path,
            line=record.line,
            field="image",
        )
    return None


def check_dataset(
    labels_path: str | Path, images_dir: str | Path | None = None, on_error: OnError = "raise"
) -> CheckReport:
    """Parse the labels and (when images_dir is given) open every image. Raises on the first problem
    unless on_error='skip', in which case every problem is collected in the report."""
    labels = read_labels(labels_path, on_error=on_error)
    report = CheckReport(labels=labels)
    if images_dir is None:
        return report
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError("images folder not found", path=images_dir)
    for record in labels.records:
        report.images_checked += 1
        error = check_image(images_dir / record.image, record, labels.path)
        if error is None:
            continue
        if on_error == "raise":
            raise error
        report.image_errors.append(error)
    labelled = {r.image for r in labels.records}
    report.unlabelled_images = sorted(
        p.name
        for p in images_dir.iterdir()
        if p.is_file() and p.name not in labelled and not p.name.startswith(".")
    )
    return report
