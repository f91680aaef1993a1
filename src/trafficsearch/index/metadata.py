"""Image metadata in SQLite: one row per encoded image, so filters are plain SQL and easy to inspect.

Nothing is loaded into Python at open: `ids` and `kinds` (the engine's per-row fast paths) are built once
on first use, names/paths are looked up by row on demand, filters run as SQL. User metadata beyond the
fixed columns lives in the `extra` JSON column and is filterable by its key like any column.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from trafficsearch.errors import IndexError_, TrafficSearchError
from trafficsearch.index.timefmt import normalize_time

COLUMNS = ("id", "row", "name", "path", "kind", "width", "height", "camera", "time", "extra")
FILTER_COLUMNS = tuple(c for c in COLUMNS if c != "extra")
_SCHEMA = """
CREATE TABLE images (
    id INTEGER PRIMARY KEY,      -- stable image id (position in the build plan)
    row INTEGER UNIQUE NOT NULL, -- row in the vectors file and FAISS index
    name TEXT NOT NULL,          -- image name as the competition writes it
    path TEXT NOT NULL,          -- relative to the gallery root (absolute for images added from elsewhere)
    kind TEXT NOT NULL,          -- vehicle | pedestrian | unknown
    width INTEGER, height INTEGER,
    camera TEXT,                 -- from `index build --metadata`
    time TEXT,                   -- ISO 8601, normalised (zoned times in UTC): text order = time order
    extra TEXT                   -- JSON object of the metadata file's other columns
);
CREATE TABLE extra_keys (key TEXT PRIMARY KEY);
"""
_INDEXES = """
CREATE INDEX images_kind ON images(kind);
CREATE INDEX images_name ON images(name);
CREATE INDEX images_camera ON images(camera);
CREATE INDEX images_time ON images(time);
"""
OPS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_NAME_CACHE = 1_000_000  # names/paths remembered per column before the cache starts over


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
    extra: dict[str, Any] | None = None


def _values(r: ImageRow) -> tuple:
    extra = json.dumps(r.extra, ensure_ascii=False, sort_keys=True) if r.extra else None
    return (r.id, r.row, r.name, r.path, r.kind, r.width, r.height, r.camera, r.time, extra)


def write_metadata(path: Path, rows: Iterable[ImageRow], image_meta: Path | None = None) -> None:
    """Write a fresh database beside `path` and rename it into place (atomic, like every index file).

    `rows` is consumed as a stream. `image_meta` (imagemeta.py) fills camera/time/extra by image name.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    connection = sqlite3.connect(tmp)
    try:
        connection.executescript(_SCHEMA)
        connection.executemany(
            f"INSERT INTO images ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            (_values(r) for r in rows),
        )
        if image_meta is not None:
            connection.execute("ATTACH DATABASE ? AS input", (f"file:{image_meta}?mode=ro",))
            connection.execute("CREATE INDEX images_name_tmp ON images(name)")
            connection.execute(
                "UPDATE images SET camera = m.camera, time = m.time, extra = m.extra "
                "FROM input.meta AS m WHERE m.name = images.name"
            )
            connection.execute("DROP INDEX images_name_tmp")
            connection.execute("INSERT INTO extra_keys SELECT key FROM input.extra_keys")
            connection.commit()
            connection.execute("DETACH DATABASE input")
        else:
            connection.execute(
                "INSERT OR IGNORE INTO extra_keys SELECT DISTINCT j.key "
                "FROM images, json_each(images.extra) j "
                "WHERE images.extra IS NOT NULL"
            )
        connection.executescript(_INDEXES)
        connection.commit()
    finally:
        connection.close()
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class _Column(Sequence[str]):
    """A text column read by row on demand (a list of 10M names would cost GBs at open)."""

    def __init__(self, meta: Metadata, column: str) -> None:
        self._meta, self._column = meta, column
        self._cache: dict[int, str] = {}

    def __len__(self) -> int:
        return self._meta.count

    @overload
    def __getitem__(self, row: int) -> str: ...
    @overload
    def __getitem__(self, row: slice) -> list[str]: ...
    def __getitem__(self, row: int | slice) -> str | list[str]:
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        row = int(row)
        if row < 0:
            row += len(self)
        value = self._cache.get(row)
        if value is None:
            found = self._meta._db.execute(
                f"SELECT {self._column} FROM images WHERE row = ?", (row,)
            ).fetchone()
            if found is None:
                raise IndexError(f"row {row} out of range")
            if len(self._cache) >= _NAME_CACHE:
                self._cache.clear()
            value = self._cache[row] = found[0]
        return value

    def __iter__(self) -> Iterator[str]:
        for (value,) in self._meta._db.execute(f"SELECT {self._column} FROM images ORDER BY row"):
            yield value


class Metadata:
    """Read-only view: per-row arrays built once for fast hit building, SQL for `where` filters."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        try:
            count, low, high = self._db.execute("SELECT count(*), min(row), max(row) FROM images").fetchone()
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(images)")}
            keys = (
                self._db.execute("SELECT key FROM extra_keys ORDER BY key").fetchall()
                if ("extra" in columns)
                else []
            )
        except sqlite3.DatabaseError as exc:
            raise IndexError_(f"metadata database is unreadable: {exc}", path=path) from None
        self.count = int(count)
        if self.count and (low != 0 or high != self.count - 1):  # rows are UNIQUE: min 0, max n-1 = 0..n-1
            raise IndexError_("metadata rows are not numbered 0..n-1", path=path)
        self._has_extra = "extra" in columns
        self.extra_keys: tuple[str, ...] = tuple(k for (k,) in keys)
        self.names = _Column(self, "name")
        self.paths = _Column(self, "path")
        self._ids: np.ndarray | None = None
        self._kinds: np.ndarray | None = None

    @property
    def ids(self) -> np.ndarray:
        """Image id per row (int64, ascending: shards are merged in id order)."""
        if self._ids is None:
            cursor = self._db.execute("SELECT id FROM images ORDER BY row")
            self._ids = np.fromiter((r[0] for r in cursor), dtype=np.int64, count=self.count)
        return self._ids

    @property
    def kinds(self) -> np.ndarray:
        """Kind per row as an object array over a handful of shared strings (8 bytes a row)."""
        if self._kinds is None:
            labels = [k for (k,) in self._db.execute("SELECT DISTINCT kind FROM images ORDER BY kind")]
            code = {k: i for i, k in enumerate(labels)}
            cursor = self._db.execute("SELECT kind FROM images ORDER BY row")
            codes = np.fromiter((code[r[0]] for r in cursor), dtype=np.int16, count=self.count)
            self._kinds = np.array(labels, dtype=object)[codes] if labels else np.empty(0, dtype=object)
        return self._kinds

    def close(self) -> None:
        self._db.close()

    def row_of_id(self, image_id: int) -> int:
        rows = self.rows_of_ids(np.array([int(image_id)]))
        if rows[0] < 0:
            raise TrafficSearchError(f"no image with id {image_id} in this index", path=self.path)
        return int(rows[0])

    def rows_of_ids(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id (-1 where the id is not in this index, e.g. padding from a vector store)."""
        ids = np.asarray(ids, dtype=np.int64)
        table = self.ids
        if not len(table):
            return np.full(ids.shape, -1, dtype=np.int64)
        pos = np.searchsorted(table, ids).clip(0, len(table) - 1)
        return np.where(table[pos] == ids, pos, -1).astype(np.int64)

    def record(self, row: int) -> dict[str, Any]:
        columns = COLUMNS if self._has_extra else COLUMNS[:-1]
        cursor = self._db.execute(f"SELECT {', '.join(columns)} FROM images WHERE row = ?", (int(row),))
        values = cursor.fetchone()
        if not values:
            return {}
        record = dict(zip(columns, values, strict=True))
        record["extra"] = json.loads(record["extra"]) if record.get("extra") else {}
        return record

    def column_sql(self, column: str) -> str:
        """The SQL expression of a filter field: a fixed column, or a key of the `extra` JSON."""
        if column in FILTER_COLUMNS:
            return column
        if column in self.extra_keys:  # keys are identifiers (imagemeta.py checks): safe inside the path
            return f"json_extract(extra, '$.{column}')"
        known = ", ".join(FILTER_COLUMNS + self.extra_keys)
        raise TrafficSearchError(f"unknown filter field {column!r}; expected one of {known}", field=column)

    def rows_where(self, where: dict[str, Any]) -> np.ndarray:
        """Rows matching every condition: {col: value}, {col: [v1, v2]} (any of) or {col: {"gte": x, ...}}."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, condition in where.items():
            expr = self.column_sql(column)
            condition = normalize_condition(column, condition)
            if isinstance(condition, dict):
                for op, value in condition.items():
                    clauses.append(f"{expr} {OPS[op]} ?")
                    params.append(value)
            elif isinstance(condition, list):
                if not condition:
                    return np.empty(0, dtype=np.int64)
                clauses.append(f"{expr} IN ({', '.join('?' * len(condition))})")
                params.extend(condition)
            elif condition is None:
                clauses.append(f"{expr} IS NULL")
            else:
                clauses.append(f"{expr} = ?")
                params.append(condition)
        sql = (
            "SELECT row FROM images"
            + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
            + " ORDER BY row"
        )
        cursor = self._db.execute(sql, params)
        return np.fromiter((r[0] for r in cursor), dtype=np.int64)


def normalize_condition(column: str, condition: Any) -> Any:
    """Check one `where` condition's shape and normalise time values, the same way for every backend.

    Returns a dict of {op: value}, a list (any of), None (IS NULL) or a scalar.
    """

    def fix(value: Any) -> Any:
        # ISO 8601 text is normalised like stored times; numbers (e.g. seconds) compare as numbers
        if (
            column != "time"
            or value is None
            or (isinstance(value, int | float) and not isinstance(value, bool))
        ):
            return value
        return normalize_time(value, field=column)

    if isinstance(condition, dict):
        for op in condition:
            if op not in OPS:
                raise TrafficSearchError(
                    f"unknown operator {op!r}; expected one of {', '.join(OPS)}", field=column
                )
        return {op: fix(value) for op, value in condition.items()}
    if isinstance(condition, Sequence) and not isinstance(condition, str | bytes):
        return [fix(v) for v in condition]
    if condition is None:
        return None
    return fix(condition)
