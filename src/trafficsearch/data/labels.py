"""Read and write the competition label format (`image$attributes$text`) and query files, strictly.

Every problem is reported as a DataError naming the file, the 1-based line and the field. With
on_error="skip" bad lines are collected instead of raised, so a caller can report how many and which.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from trafficsearch.data.records import Record, parse_vehicle_attribute
from trafficsearch.data.vocab import AT_MOST_ONE_GROUPS, EXACTLY_ONE_GROUPS, N_ATTRIBUTES
from trafficsearch.errors import DataError
from trafficsearch.ioutil import atomic_open

OnError = Literal["raise", "skip"]
_BOM = b"\xef\xbb\xbf"


@dataclass
class LabelSet:
    """Records parsed from one file, plus the errors of the lines that were skipped."""

    path: Path
    records: list[Record]
    skipped: list[DataError] = field(default_factory=list)

    def by_kind(self, kind: str) -> list[Record]:
        return [r for r in self.records if r.kind == kind]


def _split_lines(path: Path, data: bytes) -> Iterable[tuple[int, bytes | DataError]]:
    """Yield (line number, raw line) or (line number, error) for BOM/CRLF problems."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline ends the last line, it does not start a new one
    for number, raw in enumerate(lines, start=1):
        if number == 1 and raw.startswith(_BOM):
            yield (
                number,
                DataError(
                    "file starts with a UTF-8 byte-order mark (BOM); save it as UTF-8 without BOM",
                    path=path,
                    line=number,
                ),
            )
            continue
        if raw.endswith(b"\r"):
            yield (
                number,
                DataError(
                    "line ends with CRLF (Windows line ending); convert the file to LF line endings",
                    path=path,
                    line=number,
                ),
            )
            continue
        yield number, raw


def _decode(path: Path, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"bytes that are not UTF-8 at column {exc.start + 1} ({raw[exc.start : exc.start + 4]!r})",
            path=path,
            line=number,
        ) from None


def parse_vector(text: str, *, path: Path, line: int) -> tuple[int, ...]:
    """Parse and check the 21-value pedestrian attribute vector, including its exclusive groups."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != N_ATTRIBUTES:
        raise DataError(
            f"pedestrian attribute vector has {len(parts)} values, expected {N_ATTRIBUTES}",
            path=path,
            line=line,
            field="attributes",
        )
    bad = [(i, p) for i, p in enumerate(parts) if p not in ("0", "1")]
    if bad:
        i, p = bad[0]
        raise DataError(
            f"value {p!r} at position {i + 1} is not binary (0 or 1)",
            path=path,
            line=line,
            field="attributes",
        )
    vector = tuple(int(p) for p in parts)
    for group, indices in EXACTLY_ONE_GROUPS.items():
        count = sum(vector[i] for i in indices)
        if count != 1:
            raise DataError(
                f"{group} group (positions {', '.join(str(i + 1) for i in indices)}) has {count} values set, "
                "expected exactly 1",
                path=path,
                line=line,
                field="attributes",
            )
    for group, indices in AT_MOST_ONE_GROUPS.items():
        count = sum(vector[i] for i in indices)
        if count > 1:
            raise DataError(
                f"{group} group (positions {', '.join(str(i + 1) for i in indices)}) has {count} values set, "
                "expected at most 1",
                path=path,
                line=line,
                field="attributes",
            )
    return vector


def parse_line(text: str, *, path: Path, line: int) -> Record:
    """Parse one decoded label line into a Record, or raise a DataError naming the field."""
    fields = text.split("$")
    if len(fields) != 3:
        raise DataError(
            f"expected 3 '$'-separated fields (image$attributes$text), found {len(fields)}",
            path=path,
            line=line,
        )
    image, attributes, caption = fields
    if not image.strip():
        raise DataError("image name is empty", path=path, line=line, field="image")
    if image != image.strip() or "/" in image or "\\" in image:
        raise DataError(
            f"image name {image!r} must be a bare file name without spaces around it",
            path=path,
            line=line,
            field="image",
        )
    if not caption.strip():
        raise DataError("text is empty", path=path, line=line, field="text")
    if not attributes.strip():
        raise DataError("attribute field is empty", path=path, line=line, field="attributes")
    if "," in attributes or attributes[:1].isdigit():
        vector = parse_vector(attributes, path=path, line=line)
        return Record(
            image=image, kind="pedestrian", attributes=attributes, text=caption, vector=vector, line=line
        )
    vehicle = parse_vehicle_attribute(attributes)
    if vehicle is None:
        raise DataError(
            f"{attributes!r} is neither a 21-value pedestrian vector nor a vehicle label "
            "('{color} {brand}.', '{Type}.' or '{brand}.', ending with a period)",
            path=path,
            line=line,
            field="attributes",
        )
    return Record(
        image=image, kind="vehicle", attributes=attributes, text=caption, vehicle=vehicle, line=line
    )


def read_labels(path: str | Path, on_error: OnError = "raise") -> LabelSet:
    """Read a label file. Raises DataError on the first bad line, or skips and records it."""
    path = Path(path)
    if not path.is_file():
        raise DataError("label file not found", path=path)
    records: list[Record] = []
    skipped: list[DataError] = []
    seen: dict[str, int] = {}

    def fail(error: DataError) -> None:
        if on_error == "raise":
            raise error
        skipped.append(error)

    for number, raw in _split_lines(path, path.read_bytes()):
        try:
            if isinstance(raw, DataError):
                raise raw
            text = _decode(path, number, raw)
            if not text.strip():
                raise DataError("blank line", path=path, line=number)
            record = parse_line(text, path=path, line=number)
            if record.image in seen:
                raise DataError(
                    f"image {record.image!r} already labelled on line {seen[record.image]}",
                    path=path,
                    line=number,
                    field="image",
                )
        except DataError as error:
            fail(error)
            continue
        seen[record.image] = number
        records.append(record)
    if not records and not skipped:
        raise DataError("label file is empty", path=path)
    return LabelSet(path=path, records=records, skipped=skipped)


def read_queries(path: str | Path) -> list[str]:
    """Read a query file (`test_text.txt`): one query per line, scored in file order, repeats kept."""
    path = Path(path)
    if not path.is_file():
        raise DataError("query file not found", path=path)
    queries: list[str] = []
    for number, raw in _split_lines(path, path.read_bytes()):
        if isinstance(raw, DataError):
            raise raw
        text = _decode(path, number, raw)
        if not text.strip():
            raise DataError("empty query", path=path, line=number, field="text")
        queries.append(text)
    if not queries:
        raise DataError("query file is empty", path=path)
    return queries


def write_labels(records: Iterable[Record], path: str | Path) -> None:
    """Write records as a label file (LF endings, UTF-8, no BOM), atomically."""
    with atomic_open(path, "w") as handle:
        for record in records:
            handle.write(record.to_line() + "\n")


def write_queries(texts: Iterable[str], path: str | Path) -> None:
    """Write a query file in the `test_text.txt` layout, atomically."""
    with atomic_open(path, "w") as handle:
        for text in texts:
            handle.write(text + "\n")
