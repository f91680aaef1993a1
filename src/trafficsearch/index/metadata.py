"""Image metadata in SQLite: one row per encoded image, so filters are plain SQL and easy to inspect."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trafficsearch.errors import IndexError_, TrafficSearchError

COLUMNS = ("id", "row", "name", "path", "kind", "width", "height", "camera", "time")
_SCHEMA = """
CREATE TABLE images (
    id INTEGER PRIMARY KEY,      -- stable image id (position in the build plan)
    row INTEGER UNIQUE NOT NULL, -- row in the vectors file and FAISS index
    name TEXT NOT NULL,          -- image name as the competition writes it
    path TEXT NOT NULL,          -- relative to the gallery root (absolute for images added from elsewhere)
    kind TEXT NOT NULL,          -- vehicle | pedestrian | unknown
    width INTEGER, height INTEGER,
    camera TEXT, time TEXT
);
CREATE INDEX images_kind ON images(kind);
CREATE INDEX images_name ON images(name);
"""
_OPS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


@dataclass(frozen=True)
class ImageRow:
    id: int
    row: int
    name: str
    path: str
    kind: str
    width: int | None = None
    height: int | None = None
    camera: str | None = None
    time: str | None = None


def write_metadata(path: Path, rows: Iterable[ImageRow]) -> None:
    """Write a fresh database beside `path` and rename it into place (atomic, like every index file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    connection = sqlite3.connect(tmp)
    try:
        connection.executescript(_SCHEMA)
        connection.executemany(
            f"INSERT INTO images ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            ((r.id, r.row, r.name, r.path, r.kind, r.width, r.height, r.camera, r.time) for r in rows),
        )
        connection.commit()
    finally:
        connection.close()
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class Metadata:
    """Read-only view: per-row arrays for fast hit building, SQL for arbitrary `where` filters."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        cursor = self._db.execute("SELECT row, id, name, path, kind FROM images ORDER BY row")
        rows = cursor.fetchall()
        self.count = len(rows)
        if any(r[0] != i for i, r in enumerate(rows)):
            raise IndexError_("metadata rows are not numbered 0..n-1", path=path)
        self.ids = np.array([r[1] for r in rows], dtype=np.int64)
        self.names = [r[2] for r in rows]
        self.paths = [r[3] for r in rows]
        self.kinds = np.array([r[4] for r in rows], dtype=object)
        self._row_of_id = {int(i): row for row, i in enumerate(self.ids)}

    def close(self) -> None:
        self._db.close()

    def row_of_id(self, image_id: int) -> int:
        try:
            return self._row_of_id[int(image_id)]
        except KeyError:
            raise TrafficSearchError(f"no image with id {image_id} in this index", path=self.path) from None

    def record(self, row: int) -> dict[str, Any]:
        cursor = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM images WHERE row = ?", (int(row),))
        values = cursor.fetchone()
        return dict(zip(COLUMNS, values, strict=True)) if values else {}

    def rows_where(self, where: dict[str, Any]) -> np.ndarray:
        """Rows matching every condition: {col: value}, {col: [v1, v2]} (any of) or {col: {"gte": x, ...}}."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, condition in where.items():
            if column not in COLUMNS:
                raise TrafficSearchError(
                    f"unknown filter field {column!r}; expected one of {', '.join(COLUMNS)}", field=column
                )
            if isinstance(condition, dict):
                for op, value in condition.items():
                    if op not in _OPS:
                        raise TrafficSearchError(
                            f"unknown operator {op!r}; expected one of {', '.join(_OPS)}", field=column
                        )
                    clauses.append(f"{column} {_OPS[op]} ?")
                    params.append(value)
            elif isinstance(condition, Sequence) and not isinstance(condition, str | bytes):
                if not condition:
                    return np.empty(0, dtype=np.int64)
                clauses.append(f"{column} IN ({', '.join('?' * len(condition))})")
                params.extend(condition)
            elif condition is None:
                clauses.append(f"{column} IS NULL")
            else:
                clauses.append(f"{column} = ?")
                params.append(condition)
        sql = (
            "SELECT row FROM images"
            + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
            + " ORDER BY row"
        )
        return np.array([r[0] for r in self._db.execute(sql, params)], dtype=np.int64)
