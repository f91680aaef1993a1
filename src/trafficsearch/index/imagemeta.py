"""`index build --metadata FILE.csv|jsonl`: per-image camera, time and any extra columns, validated up
front (one error naming file and line) and kept as a small SQLite file that every merge joins by name."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import sqlite3
from collections.abc import Container, Iterator
from pathlib import Path
from typing import Any

from trafficsearch.errors import DataError
from trafficsearch.index.timefmt import normalize_time

IMAGE_META = "image_meta.sqlite"
FIXED = ("name", "camera", "time")
# Columns the index computes itself: a metadata file may not set them.
RESERVED = frozenset({"id", "row", "path", "kind", "width", "height", "extra", "day"})
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each data line of a .csv or .jsonl file."""
    suffix = path.suffix.lower()
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise DataError(f"cannot read metadata file: {exc.strerror}", path=path) from None
    with handle:
        if suffix == ".csv":
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "name" not in reader.fieldnames:
                raise DataError("metadata CSV has no 'name' column in its header", path=path, line=1)
            _check_columns(reader.fieldnames, path, 1)
            for record in reader:
                if None in record:
                    raise DataError("more values than header columns", path=path, line=reader.line_num)
                yield reader.line_num, {k: (v if v != "" else None) for k, v in record.items()}
        elif suffix in (".jsonl", ".ndjson"):
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise DataError(f"not valid JSON: {exc.msg}", path=path, line=number) from None
                if not isinstance(record, dict):
                    raise DataError("each line must be a JSON object", path=path, line=number)
                if "name" not in record:
                    raise DataError("record has no 'name'", path=path, line=number, field="name")
                _check_columns(list(record), path, number)
                yield number, record
        else:
            raise DataError("metadata file must end in .csv or .jsonl", path=path)


def _check_columns(columns: list[str], path: Path, line: int) -> None:
    for column in columns:
        if column in RESERVED:
            raise DataError(
                f"column {column!r} is computed by the index and cannot be set", path=path, line=line
            )
        if not _KEY.match(column):
            raise DataError(
                f"column name {column!r} must be a letter or _ followed by letters, digits or _",
                path=path,
                line=line,
            )


def read_image_metadata(
    path: str | Path, known_names: Container[str]
) -> Iterator[tuple[str, str | None, str | None, dict[str, Any] | None]]:
    """Validated (name, camera, time, extra) per line; DataError at the first bad line."""
    path = Path(path)
    seen: dict[str, int] = {}
    for line, record in _records(path):
        name = record.get("name")
        if not isinstance(name, str) or not name:
            raise DataError("'name' must be a non-empty text", path=path, line=line, field="name")
        if name not in known_names:
            raise DataError(f"unknown image name {name!r} (not in this gallery)", path=path, line=line)
        if name in seen:
            raise DataError(
                f"duplicate name {name!r} (first on line {seen[name]})", path=path, line=line, field="name"
            )
        seen[name] = line
        camera = record.get("camera")
        if camera is not None and not isinstance(camera, str | int):
            raise DataError("'camera' must be a text", path=path, line=line, field="camera")
        time = record.get("time")
        if time is not None:
            time = normalize_time(time, path=path, line=line)
        extra = {k: v for k, v in record.items() if k not in FIXED and v is not None}
        yield name, (str(camera) if camera is not None else None), time, extra or None


def write_image_metadata(index_dir: Path, source: str | Path, known_names: Container[str]) -> int:
    """Validate `source` against the planned image names and store it atomically; the record count."""
    target = index_dir / IMAGE_META
    tmp = target.with_name(f".{target.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    connection = sqlite3.connect(tmp)
    keys: set[str] = set()
    count = 0
    try:
        connection.executescript(
            "CREATE TABLE meta (name TEXT PRIMARY KEY, camera TEXT, time TEXT, extra TEXT);"
            "CREATE TABLE extra_keys (key TEXT PRIMARY KEY);"
        )

        def rows() -> Iterator[tuple]:
            nonlocal count
            for name, camera, time, extra in read_image_metadata(source, known_names):
                count += 1
                if extra:
                    keys.update(extra)
                yield (
                    name,
                    camera,
                    time,
                    json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None,
                )

        connection.executemany("INSERT INTO meta VALUES (?, ?, ?, ?)", rows())
        connection.executemany("INSERT INTO extra_keys VALUES (?)", ((k,) for k in sorted(keys)))
        connection.commit()
    except BaseException:
        connection.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    connection.close()
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    return count
