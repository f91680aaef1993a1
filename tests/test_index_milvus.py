"""Milvus specifics beyond the shared contract: filter expressions escape what users type, partitions
follow the metadata, index-type tuning measures recall against exact search, push resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trafficsearch.errors import TrafficSearchError
from trafficsearch.index.imagemeta import write_image_metadata
from trafficsearch.index.merge import merge_index
from trafficsearch.index.store import open_index
from trafficsearch.index.stores.manage import detach_store, push_to_milvus
from trafficsearch.index.stores.milvus import MilvusStore, where_expr
from trafficsearch.index.synthetic import append_synthetic, start_synthetic, unit_vectors

DIM, N = 8, 600
ODD = 'cam "north" \\ gate'


def test_where_expr_escapes_and_translates() -> None:
    expr = where_expr(
        {"camera": [ODD, "c1"], "time": {"gte": "2024-05-01T10:00:00+02:00"}, "lane": 2, "kind": None},
        extra_keys=("lane",),
    )
    assert expr == (
        '(camera in ["cam \\"north\\" \\\\ gate", "c1"]) and (time >= "2024-05-01T08:00:00") '
        'and (extra["lane"] == 2) and (kind is null)'
    )
    assert where_expr({"camera": []}) == "id < 0"
    with pytest.raises(TrafficSearchError, match="unknown filter field 'speed'"):
        where_expr({"speed": 3})
    with pytest.raises(TrafficSearchError, match="cannot filter on 'row'"):
        where_expr({"row": 3})
    with pytest.raises(TrafficSearchError, match="ISO 8601 text"):  # numeric times only work in SQLite
        where_expr({"time": {"gte": 150}})


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("milvus")
    index_dir = root / "index"
    start_synthetic(index_dir, DIM, 100)
    append_synthetic(index_dir, unit_vectors(5, DIM), N)
    meta = root / "meta.jsonl"
    meta.write_text(
        "".join(
            json.dumps(
                {
                    "name": f"img{i:08d}.jpg",
                    "camera": ODD if i % 5 == 0 else f"c{i % 3}",
                    "time": f"2024-05-0{1 + i % 4}T12:00:00",
                }
            )
            + "\n"
            for i in range(N)
        ),
        encoding="utf-8",
    )
    write_image_metadata(index_dir, meta, {f"img{i:08d}.jpg" for i in range(N)})
    merge_index(index_dir, progress=False)
    return index_dir


def test_odd_camera_names_filter_exactly(index_dir: Path, tmp_path: Path) -> None:
    store = MilvusStore(index_dir, str(tmp_path / "m.db"), collection="odd", partition_by="camera")
    store.ingest()
    _, ids = store.search(unit_vectors(9, DIM)(0, 1), N, {"camera": ODD})
    meta = open_index(index_dir).metadata
    assert sorted(ids[0][ids[0] >= 0].tolist()) == meta.ids[meta.rows_where({"camera": ODD})].tolist()
    assert len(ids[0][ids[0] >= 0]) == N // 5


def test_push_tunes_the_index_type_and_resumes(index_dir: Path, tmp_path: Path) -> None:
    queries = unit_vectors(11, DIM)(0, 40)
    uri = str(tmp_path / "t.db")

    class Killed(Exception):
        pass

    store = MilvusStore(index_dir, uri, collection="tuned")
    with pytest.raises(Killed):
        store.ingest(on_shard=lambda number: (_ for _ in ()).throw(Killed()) if number == 2 else None)
    assert 0 < store.count() < N
    manifest = push_to_milvus(
        index_dir, uri, collection="tuned", queries=queries, k=10, target=0.9, progress=False
    )
    spec = manifest["store"]
    chosen = spec["tune"]["chosen"]
    assert spec["index_type"] == chosen["index_type"] and chosen["recall"] >= 0.9
    assert {t["index_type"] for t in spec["tune"]["trials"]} >= {"FLAT", "HNSW"}
    reopened = MilvusStore.from_spec(index_dir, spec)
    assert reopened.count() == N
    data = open_index(index_dir)
    exact = np.argsort(-(queries @ np.asarray(data.vectors, np.float32).T), axis=1)[:, :10]
    _, found = reopened.search(queries, 10)
    hits = np.mean([len(set(f) & set(data.metadata.ids[e])) / 10 for f, e in zip(found, exact, strict=True)])
    assert hits >= 0.9
    assert "store" not in detach_store(index_dir)  # the fixture searches locally again
