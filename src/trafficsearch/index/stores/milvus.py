"""Milvus as the scale-out store: one collection per model holding the vectors and the scalar metadata
(name, path, kind, camera, time, user metadata as JSON), filters pushed down as a boolean expression,
partitioned by day or camera (a partition key). milvus-lite (`uri` = a local .db file) embeds the same
engine for tests and one machine; a cluster is the same code with `uri=http://host:19530` and a token.

Ingest reads the index directory's resumable shards and upserts them by image id, recording finished
shards in a checkpoint file: a killed push resumes, and a shard upserted twice is stored once.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trafficsearch.errors import ConfigError, IndexError_, TrafficSearchError
from trafficsearch.index.files import read_manifest
from trafficsearch.index.merge import read_deleted, record_deleted
from trafficsearch.index.metadata import FILTER_COLUMNS, Metadata, normalize_condition
from trafficsearch.index.plan import Plan
from trafficsearch.index.shards import read_shard
from trafficsearch.index.stores.base import ShardHook, Where
from trafficsearch.index.timefmt import day_of
from trafficsearch.ioutil import atomic_write_json

TOKEN_ENV = "TRAFFICSEARCH_MILVUS_TOKEN"  # tokens never go into the manifest
PARTITION_BY = ("day", "camera", "none")
INDEX_TYPES = ("FLAT", "IVF_FLAT", "HNSW")
MAX_TOPK = 16_384  # Milvus' limit on one search's k
_BATCH = 2048
_OPS = {"eq": "==", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_FIELDS = ("name", "path", "kind", "width", "height", "camera", "time", "extra")
_clients: dict[tuple[str, str], Any] = {}


def collection_name(manifest: dict[str, Any]) -> str:
    """Default collection: one per model (name + fingerprint), as Milvus spells names."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", str(manifest["model_name"]))
    return f"ts_{base}_{manifest['model_fingerprint'][:8]}"[:255]


def _literal(value: Any, column: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TrafficSearchError(f"filter value {value!r} must be a text or a number", field=column)


def where_expr(where: Where | None, extra_keys: Sequence[str] = ()) -> str | None:
    """The Milvus boolean expression for a `where` filter (Metadata.rows_where format); None: no filter.

    Raises for an unknown field; returns 'false'-like expression semantics via None/[] handling by caller.
    """
    clauses: list[str] = []
    for column, condition in (where or {}).items():
        if column == "row":
            raise TrafficSearchError("a Milvus store cannot filter on 'row'; filter on 'id'", field=column)
        if column in FILTER_COLUMNS:
            field = column
        elif column in extra_keys:
            field = f'extra["{column}"]'
        else:
            known = ", ".join([c for c in FILTER_COLUMNS if c != "row"] + list(extra_keys))
            raise TrafficSearchError(
                f"unknown filter field {column!r}; expected one of {known}", field=column
            )
        condition = normalize_condition(column, condition)
        if column == "time" and _numbers(condition):
            raise TrafficSearchError(
                "a Milvus store holds times as ISO 8601 text: filter with e.g. '2024-05-01T08:00:00'",
                field=column,
            )
        if isinstance(condition, dict):
            clauses.extend(f"{field} {_OPS[op]} {_literal(v, column)}" for op, v in condition.items())
        elif isinstance(condition, list):
            if not condition:
                return "id < 0"  # matches nothing (ids are >= 0)
            clauses.append(f"{field} in [{', '.join(_literal(v, column) for v in condition)}]")
        elif condition is None:
            clauses.append(f"{field} is null")
        else:
            clauses.append(f"{field} == {_literal(condition, column)}")
    return " and ".join(f"({c})" for c in clauses) if clauses else None


def _numbers(condition: Any) -> bool:
    values = (
        condition.values()
        if isinstance(condition, dict)
        else (condition if isinstance(condition, list) else [condition])
    )
    return any(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _client(uri: str, token: str | None) -> Any:
    from pymilvus import MilvusClient

    key = (uri, token or "")
    if key not in _clients:
        try:
            _clients[key] = MilvusClient(uri=uri, token=token or "")
        except Exception as exc:  # pymilvus raises its own types and plain ones for a bad URI
            raise IndexError_(f"cannot connect to Milvus at {uri}: {exc}", field="milvus") from None
    return _clients[key]


def resolve_uri(uri: str) -> str:
    """A local milvus-lite file becomes absolute (so any cwd reopens it); network URIs stay as given."""
    if "://" in uri:
        return uri
    return str(Path(uri).expanduser().resolve())


class MilvusStore:
    backend = "milvus"

    def __init__(
        self,
        index_dir: str | Path,
        uri: str,
        collection: str | None = None,
        token: str | None = None,
        partition_by: str = "day",
        index_type: str = "FLAT",
        index_params: dict[str, Any] | None = None,
        search_params: dict[str, Any] | None = None,
        tune: dict[str, Any] | None = None,
    ) -> None:
        if partition_by not in PARTITION_BY:
            raise ConfigError(
                f"partition_by must be one of {', '.join(PARTITION_BY)}, not {partition_by!r}",
                field="partition_by",
            )
        if index_type not in INDEX_TYPES:
            raise ConfigError(
                f"index type must be one of {', '.join(INDEX_TYPES)}, not {index_type!r}", field="index_type"
            )
        self.index_dir = Path(index_dir)
        self.manifest = read_manifest(self.index_dir)
        self.uri = resolve_uri(uri)
        self.collection = collection or collection_name(self.manifest)
        self.partition_by = partition_by
        self.index_type = index_type
        self.index_params = dict(index_params or {})
        self.search_params = dict(search_params or {})
        self.tune = tune
        self.dim = int(self.manifest["dim"])
        self.client = _client(self.uri, token or os.environ.get(TOKEN_ENV))
        self._metadata: Metadata | None = None

    @classmethod
    def from_spec(cls, index_dir: str | Path, spec: dict[str, Any], token: str | None = None) -> MilvusStore:
        return cls(
            index_dir,
            spec["uri"],
            spec.get("collection"),
            token=token,
            partition_by=spec.get("partition_by", "day"),
            index_type=spec.get("index_type", "FLAT"),
            index_params=spec.get("index_params"),
            search_params=spec.get("search_params"),
            tune=spec.get("tune"),
        )

    @property
    def metadata(self) -> Metadata:
        if self._metadata is None:
            self._metadata = Metadata(self.index_dir / self.manifest["files"]["metadata"])
        return self._metadata

    # --- collection -------------------------------------------------------------------------------
    def _schema(self) -> Any:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("name", DataType.VARCHAR, max_length=1024)
        schema.add_field("path", DataType.VARCHAR, max_length=4096)
        schema.add_field("kind", DataType.VARCHAR, max_length=32)
        schema.add_field("width", DataType.INT64, nullable=True)
        schema.add_field("height", DataType.INT64, nullable=True)
        schema.add_field("camera", DataType.VARCHAR, max_length=256, nullable=True)
        schema.add_field("time", DataType.VARCHAR, max_length=40, nullable=True)
        schema.add_field("extra", DataType.JSON, nullable=True)
        schema.add_field(
            "part", DataType.VARCHAR, max_length=256, is_partition_key=self.partition_by != "none"
        )
        return schema

    def _index_params(self) -> Any:
        params = self.client.prepare_index_params()
        params.add_index("vector", index_type=self.index_type, metric_type="IP", params=self.index_params)
        return params

    def ensure_collection(self) -> None:
        """Create the collection (once); refuse one whose vectors have another dim."""
        if self.client.has_collection(self.collection):
            fields = self.client.describe_collection(self.collection)["fields"]
            dims = [int(f["params"].get("dim", 0)) for f in fields if f["name"] == "vector"]
            if dims != [self.dim]:
                raise IndexError_(
                    f"Milvus collection {self.collection!r} holds vectors of dim {dims}, "
                    f"this index {self.dim}; use another --collection",
                    field="collection",
                )
            return
        extra = {"num_partitions": 16} if self.partition_by != "none" else {}
        self.client.create_collection(
            self.collection, schema=self._schema(), index_params=self._index_params(), **extra
        )

    def set_index(self, index_type: str, index_params: dict[str, Any], search_params: dict[str, Any]) -> None:
        """Rebuild the vector index with another type (used by tuning); the data stays."""
        self.index_type, self.index_params, self.search_params = (
            index_type,
            dict(index_params),
            dict(search_params),
        )
        self.client.release_collection(self.collection)
        self.client.drop_index(self.collection, "vector")
        self.client.create_index(self.collection, self._index_params())
        self.client.load_collection(self.collection)

    def drop(self) -> None:
        if self.client.has_collection(self.collection):
            self.client.drop_collection(self.collection)
        self._checkpoint_path().unlink(missing_ok=True)

    # --- protocol ---------------------------------------------------------------------------------
    def count(self) -> int:
        result = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(result[0]["count(*)"])

    def search(
        self, queries: np.ndarray, k: int, where: Where | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if k > MAX_TOPK:
            raise TrafficSearchError(f"Milvus returns at most {MAX_TOPK} hits per query, not {k}", field="k")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        expr = where_expr(where, self.metadata.extra_keys)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        if not len(queries):
            return scores, ids
        results = self.client.search(
            self.collection,
            data=[q for q in queries],
            limit=k,
            filter=expr or "",
            search_params={"metric_type": "IP", "params": self.search_params},
            output_fields=[],
        )
        for i, hits in enumerate(results):
            for j, hit in enumerate(hits[:k]):
                ids[i, j] = int(hit["id"])
                scores[i, j] = float(hit["distance"])
        return scores, ids

    def _checkpoint_path(self) -> Path:
        return self.index_dir / f"store-milvus-{self.collection}.json"

    def _checkpoint(self) -> set[int]:
        path = self._checkpoint_path()
        if not path.is_file():
            return set()
        state = json.loads(path.read_text(encoding="utf-8"))
        same = state.get("uri") == self.uri and state.get("metadata") == self.manifest["files"]["metadata"]
        return {int(s) for s in state.get("done", [])} if same else set()

    def _save_checkpoint(self, done: set[int]) -> None:
        atomic_write_json(
            self._checkpoint_path(),
            {"uri": self.uri, "metadata": self.manifest["files"]["metadata"], "done": sorted(done)},
            indent=None,
        )

    def ingest(self, progress: bool = False, on_shard: ShardHook | None = None) -> int:
        """Upsert every shard not yet pushed (by image id), after deleting the directory's deleted ids."""
        from rich.progress import Progress

        self.manifest, self._metadata = read_manifest(self.index_dir), None  # the latest local merge
        self.ensure_collection()
        plan = Plan.load(self.index_dir)
        if plan is None:
            raise IndexError_("no build plan: nothing to push", path=self.index_dir)
        deleted = read_deleted(self.index_dir)
        if deleted:
            self.client.delete(self.collection, ids=sorted(deleted))
        done = self._checkpoint()
        todo = [i for i in range(len(plan.shards)) if i not in done]
        db = sqlite3.connect(f"file:{self.metadata.path}?mode=ro", uri=True)
        written = 0
        try:
            with Progress(disable=not progress, transient=True) as bar:
                task = bar.add_task(f"pushing to {self.collection}", total=len(todo))
                for number in todo:
                    self._push_shard(db, plan, number, deleted)
                    done.add(number)
                    self._save_checkpoint(done)
                    written += 1
                    bar.advance(task)
                    if on_shard is not None:
                        on_shard(number)
        finally:
            db.close()
        self.client.flush(self.collection)
        return written

    def _push_shard(self, db: sqlite3.Connection, plan: Plan, number: int, deleted: set[int]) -> None:
        shard = read_shard(self.index_dir, number)
        if not len(shard.ids):
            return
        lo, hi = int(shard.ids.min()), int(shard.ids.max())
        records = {
            r[0]: r
            for r in db.execute(
                f"SELECT id, {', '.join(_FIELDS)} FROM images WHERE id BETWEEN ? AND ?", (lo, hi)
            )
        }
        batch: list[dict[str, Any]] = []
        vectors = shard.vectors.astype(np.float32)
        for i, image_id in enumerate(shard.ids.tolist()):
            record = records.get(image_id)
            if record is None or image_id in deleted:  # deleted (or not in the committed index)
                continue
            _, name, path, kind, width, height, camera, time, extra = record
            part = {"day": day_of(time), "camera": camera or "none", "none": "none"}[self.partition_by]
            batch.append(
                {
                    "id": image_id,
                    "vector": vectors[i],
                    "name": name,
                    "path": path,
                    "kind": kind,
                    "width": width,
                    "height": height,
                    "camera": camera,
                    "time": time,
                    "extra": json.loads(extra) if extra else None,
                    "part": part,
                }
            )
            if len(batch) >= _BATCH:
                self.client.upsert(self.collection, batch)
                batch = []
        if batch:
            self.client.upsert(self.collection, batch)

    def delete(self, ids: np.ndarray) -> None:
        ids = [int(i) for i in np.asarray(ids).tolist()]
        record_deleted(self.index_dir, ids)
        if ids:
            self.client.delete(self.collection, ids=ids)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "uri": self.uri,
            "collection": self.collection,
            "partition_by": self.partition_by,
            "index_type": self.index_type,
            "index_params": self.index_params,
            "search_params": self.search_params,
            "tune": self.tune,
        }
