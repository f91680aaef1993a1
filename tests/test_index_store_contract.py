"""One contract, two backends: the FAISS index directory and Milvus (milvus-lite). numpy and SQLite
(Metadata.rows_where) are the oracles; ingest is killed and resumed; images are added and deleted."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from trafficsearch.index.imagemeta import write_image_metadata
from trafficsearch.index.merge import merge_index
from trafficsearch.index.store import open_index
from trafficsearch.index.stores.base import VectorStore
from trafficsearch.index.stores.faiss_dir import FaissDirStore
from trafficsearch.index.synthetic import append_synthetic, start_synthetic, unit_vectors

DIM, N, SHARD = 16, 240, 80
BACKENDS = ["faiss-dir", "milvus"]


class Killed(Exception):
    pass


def _make_index(root: Path) -> Path:
    index_dir = root / "index"
    start_synthetic(index_dir, DIM, SHARD)
    kinds = ["vehicle" if i % 3 else "pedestrian" for i in range(N)]
    append_synthetic(index_dir, unit_vectors(1, DIM), N, kinds)
    meta = root / "meta.csv"
    with meta.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "camera", "time", "color"])
        for i in range(N):
            camera = f"c{i % 4}" if i % 7 else ""
            time = f"2024-05-0{1 + i % 3}T{i % 24:02d}:00:00"
            writer.writerow([f"img{i:08d}.jpg", camera, time, "red" if i % 2 else "blue"])
    write_image_metadata(index_dir, meta, {f"img{i:08d}.jpg" for i in range(N)})
    merge_index(index_dir, progress=False)
    return index_dir


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_index(tmp_path_factory.mktemp("contract"))


def _store(backend: str, index_dir: Path, name: str = "a") -> VectorStore:
    if backend == "faiss-dir":
        return FaissDirStore(index_dir)
    from trafficsearch.index.stores.milvus import MilvusStore

    return MilvusStore(index_dir, str(index_dir.parent / "milvus.db"), collection=f"c_{name}")


def _sync(store: VectorStore, on_shard=None) -> None:
    """Bring a store up to date after the directory changed (Milvus pushes from the merged directory)."""
    if store.backend == "milvus":
        merge_index(store.index_dir, progress=False)
    store.ingest(on_shard=on_shard)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def index_dir(template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "index"
    shutil.copytree(template, target)
    return target


def _numpy_topk(index_dir: Path, queries: np.ndarray, k: int, rows: np.ndarray | None = None):
    data = open_index(index_dir)
    vectors = np.asarray(data.vectors, dtype=np.float32)
    rows = np.arange(data.count) if rows is None else rows
    scores = queries @ vectors[rows].T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, top, axis=1), data.metadata.ids[rows[top]]


def _queries(n: int = 6) -> np.ndarray:
    return unit_vectors(99, DIM)(0, n)


def test_exact_top_k_equals_numpy(backend: str, index_dir: Path) -> None:
    store = _store(backend, index_dir)
    _sync(store)
    assert store.count() == N
    scores, ids = store.search(_queries(), 10)
    want_scores, want_ids = _numpy_topk(index_dir, _queries(), 10)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


WHERES = [
    {"camera": ["c1", "c2"]},
    {"camera": None},
    {"camera": {"ne": "c0"}},
    {"time": {"gte": "2024-05-02", "lt": "2024-05-03"}},
    {"time": {"gte": "2024-05-02T10:00:00+02:00"}},
    {"kind": "pedestrian", "color": "red"},
    {"camera": "c3", "time": {"lte": "2024-05-02T23:59:59"}, "kind": ["vehicle"]},
    {"id": {"gte": 50, "lt": 90}},
    {"camera": []},
]


@pytest.mark.parametrize("where", WHERES, ids=[str(w) for w in WHERES])
def test_filtered_results_equal_sqlite(backend: str, index_dir: Path, where: dict) -> None:
    store = _store(backend, index_dir)
    _sync(store)
    meta = open_index(index_dir).metadata
    allowed = meta.rows_where(where)
    _, ids = store.search(_queries(2), N, where)
    for row in ids:
        assert sorted(row[row >= 0].tolist()) == sorted(meta.ids[allowed].tolist())
    if len(allowed):
        scores, top = store.search(_queries(), 5, where)
        want_scores, want_ids = _numpy_topk(index_dir, _queries(), 5, allowed)
        np.testing.assert_array_equal(top[:, : want_ids.shape[1]], want_ids)
        np.testing.assert_allclose(scores[:, : want_ids.shape[1]], want_scores, rtol=1e-5, atol=1e-5)
    assert 0 < len(allowed) < N or where == {"camera": []}


def _everything(store: VectorStore) -> tuple[list, list]:
    scores, ids = store.search(_queries(3), N + 200)
    keep = ids >= 0
    return [r[k].tolist() for r, k in zip(ids, keep, strict=True)], [
        np.round(s[k], 5).tolist() for s, k in zip(scores, keep, strict=True)
    ]


def test_kill_and_resume_ingest_equals_uninterrupted(backend: str, index_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other" / "index"
    shutil.copytree(index_dir, other)
    stores = []
    for directory, name in ((index_dir, "a"), (other, "b")):
        store = _store(backend, directory, name)
        _sync(store)
        append_synthetic(directory, unit_vectors(2, DIM), 2 * SHARD, prefix="new")
        stores.append(store)
    plain, killed = stores
    _sync(plain)

    def kill(number: int) -> None:
        raise Killed(number)

    with pytest.raises(Killed):
        _sync(killed, on_shard=kill)
    _sync(killed)
    assert killed.count() == plain.count() == N + 2 * SHARD
    assert _everything(killed) == _everything(plain)


def test_add_and_delete(backend: str, index_dir: Path) -> None:
    store = _store(backend, index_dir)
    _sync(store)
    added = unit_vectors(3, DIM)(0, 10)
    append_synthetic(index_dir, unit_vectors(3, DIM), 10, prefix="added")
    _sync(store)
    assert store.count() == N + 10
    _, ids = store.search(added, 1)
    assert ids[:, 0].tolist() == list(range(N, N + 10))  # each new vector finds itself

    gone = np.array([0, 5, N + 1])
    store.delete(gone)
    assert store.count() == N + 10 - 3
    _, ids = store.search(_queries(), N + 10)
    assert not np.isin(ids, gone).any()
    _sync(store)  # a later ingest keeps them deleted
    assert store.count() == N + 10 - 3
    _, ids = store.search(np.concatenate([added[1:2], _queries()]), N + 10)
    assert not np.isin(ids, gone).any()
    assert (ids >= 0).sum(axis=1).tolist() == [N + 7] * len(ids)
