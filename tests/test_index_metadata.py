"""Metadata files at index time (validated, one line naming file and line), stored in SQLite (extra JSON),
filterable in the engine; the streaming merge's Flat writer checked byte for byte against FAISS."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from trafficsearch.errors import DataError, TrafficSearchError
from trafficsearch.index import build_index
from trafficsearch.index.exact import direct_scan, flat_storage, search_exact
from trafficsearch.index.faiss_util import load_faiss, write_flat
from trafficsearch.index.filters import parse_where
from trafficsearch.index.imagemeta import read_image_metadata
from trafficsearch.index.store import open_index
from trafficsearch.search.engine import SearchEngine
from trafficsearch.testing.color import ColorModel, make_color_gallery

NAMES = {"a.jpg", "b.jpg", "c.jpg"}


def _errors(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as info:
        list(read_image_metadata(path, NAMES))
    return str(info.value)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("m.csv", "name,camera\na.jpg,c1\nzzz.jpg,c2\n", "m.csv:3: unknown image name 'zzz.jpg'"),
        (
            "m.csv",
            "name,time\na.jpg,2024-05-01\nb.jpg,yesterday\n",
            "m.csv:3: field 'time': time 'yesterday'",
        ),
        (
            "m.csv",
            "name,camera\na.jpg,c1\nb.jpg,c1\na.jpg,c2\n",
            "m.csv:4: field 'name': duplicate name 'a.jpg' (first on line 2)",
        ),
        ("m.csv", "image,camera\na.jpg,c1\n", "m.csv:1: metadata CSV has no 'name' column"),
        ("m.csv", "name,kind\na.jpg,vehicle\n", "m.csv:1: column 'kind' is computed by the index"),
        ("m.csv", "name,my lane\na.jpg,1\n", "m.csv:1: column name 'my lane' must be"),
        ("m.jsonl", '{"name": "a.jpg"}\n{"name": "b.jpg", \n', "m.jsonl:2: not valid JSON"),
        ("m.jsonl", '{"camera": "c1"}\n', "m.jsonl:1: field 'name': record has no 'name'"),
        ("m.txt", "name\na.jpg\n", "m.txt: metadata file must end in .csv or .jsonl"),
    ],
)
def test_bad_metadata_files_fail_with_file_and_line(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    message = _errors(tmp_path, name, text)
    assert expected in message and "\n" not in message


def test_times_are_normalised_so_text_order_is_time_order(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    lines = [
        {"name": "a.jpg", "time": "2024-05-01T10:00:00+02:00", "lane": 2},
        {"name": "b.jpg", "time": "2024-05-01"},
        {"name": "c.jpg", "time": "2024-05-01T09:30:00Z", "camera": "c9"},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    got = list(read_image_metadata(path, NAMES))
    assert got == [
        ("a.jpg", None, "2024-05-01T08:00:00", {"lane": 2}),
        ("b.jpg", None, "2024-05-01T00:00:00", None),
        ("c.jpg", "c9", "2024-05-01T09:30:00", None),
    ]


def test_parse_where_builds_the_rows_where_format() -> None:
    where = parse_where(
        ["camera=c1,c2", "color=red", "id<100", "width>=10"], "2024-05-01T08:00", "2024-05-02"
    )
    assert where == {
        "camera": ["c1", "c2"],
        "color": "red",
        "id": {"lt": 100},
        "width": {"gte": 10},
        "time": {"gte": "2024-05-01T08:00:00", "lt": "2024-05-03T00:00:00"},
    }
    with pytest.raises(TrafficSearchError, match="is not COLUMN=VALUE"):
        parse_where(["camera"])
    with pytest.raises(TrafficSearchError, match="takes a whole number"):
        parse_where(["id=abc"])
    with pytest.raises(DataError, match="not ISO 8601"):
        parse_where([], time_from="last tuesday")


COLORS = {"r1.jpg": "red", "r2.jpg": "red", "r3.jpg": "red", "b1.jpg": "blue", "g1.jpg": "green"}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("meta")
    make_color_gallery(root / "g", COLORS)
    (root / "m.csv").write_text(
        "name,camera,time,lane\n"
        "r1.jpg,c1,2024-05-01T08:00:00,1\n"
        "r2.jpg,c2,2024-05-02T08:00:00,2\n"
        "r3.jpg,c1,2024-05-03T08:00:00,\n"
        "b1.jpg,c1,2024-05-02T09:00:00,1\n",
        encoding="utf-8",
    )
    build_index(root / "g", root / "idx", ColorModel(), metadata=root / "m.csv", workers=0, progress=False)
    return root


def test_metadata_is_stored_and_filters_search(indexed: Path) -> None:
    engine = SearchEngine(open_index(indexed / "idx"), ColorModel())
    meta = engine.data.metadata
    record = meta.record(
        meta.row_of_id(next(h.id for h in engine.search("red", k=5)[0] if h.name == "r2.jpg"))
    )
    assert (record["camera"], record["time"], record["extra"]) == ("c2", "2024-05-02T08:00:00", {"lane": "2"})
    assert meta.extra_keys == ("lane",)
    names = lambda hits: [h.name for h in hits]  # noqa: E731
    assert set(names(engine.search("red", k=5, where={"camera": "c1"})[0])) == {"r1.jpg", "r3.jpg", "b1.jpg"}
    in_range = {"time": {"gte": "2024-05-02", "lt": "2024-05-03"}}
    assert set(names(engine.search("red", k=5, where=in_range)[0])) == {"r2.jpg", "b1.jpg"}
    assert names(engine.search("red", k=5, where={"lane": "1", "camera": ["c1", "c2"]})[0])[0] == "r1.jpg"
    assert set(names(engine.search("red", k=5, where={"lane": "1"})[0])) == {"r1.jpg", "b1.jpg"}
    assert names(engine.search("red", k=5, where={"camera": None})[0]) == ["g1.jpg"]
    with pytest.raises(TrafficSearchError, match="unknown filter field 'speed'.*lane"):
        engine.search("red", where={"speed": 3})


def test_a_new_metadata_file_replaces_the_old_on_rebuild(indexed: Path, tmp_path: Path) -> None:
    import shutil

    work = tmp_path / "idx"
    shutil.copytree(indexed / "idx", work)
    (tmp_path / "m2.csv").write_text("name,camera\ng1.jpg,c7\n", encoding="utf-8")
    build_index(indexed / "g", work, ColorModel(), metadata=tmp_path / "m2.csv", workers=0, progress=False)
    meta = open_index(work).metadata
    assert [meta.names[r] for r in meta.rows_where({"camera": "c7"})] == ["g1.jpg"]
    assert not len(meta.rows_where({"camera": "c1"}))


def test_flat_index_is_written_in_chunks_byte_identical_to_faiss(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1000, 12)).astype(np.float16)
    reference = faiss.IndexFlatIP(12)
    reference.add(vectors.astype(np.float32))
    write_flat(tmp_path / "f.index", vectors, chunk=64)
    assert (tmp_path / "f.index").read_bytes() == faiss.serialize_index(reference).tobytes()
    mapped = load_faiss(tmp_path / "f.index", mmap=True)
    queries = rng.standard_normal((4, 12)).astype(np.float32)
    d1, i1 = mapped.search(queries, 7)
    d2, i2 = reference.search(queries, 7)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, rtol=1e-6)


def test_a_flat_index_keeps_aligned_float32_vectors_that_the_exact_scan_reads_directly(
    indexed: Path,
) -> None:
    data = open_index(indexed / "idx")
    assert data.manifest["vectors_dtype"] == "float32" and data.vectors.dtype == np.float32
    assert isinstance(data.vectors, np.memmap) and direct_scan(data.vectors)
    assert data.faiss.ntotal == data.count == len(COLORS)
    # FAISS's own memory-mapped codes sit at an unaligned offset: those would be copied block by block
    storage = flat_storage(data.faiss)
    assert storage is not None and not direct_scan(storage)
    np.testing.assert_array_equal(storage, data.vectors)
    # the float32 rows are the shards' fp16 values, upcast exactly
    np.testing.assert_array_equal(data.vectors, np.asarray(data.vectors).astype(np.float16))
    queries = np.asarray(data.vectors[:3]) + 0.01
    oracle = np.argsort(-(queries @ np.asarray(data.vectors).T), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(search_exact(data.faiss, data.vectors, queries, 5)[1], oracle)


def test_a_manifest_naming_another_vectors_dtype_is_refused(indexed: Path, tmp_path: Path) -> None:
    copy = tmp_path / "idx"
    shutil.copytree(indexed / "idx", copy)
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    manifest["vectors_dtype"] = "float16"
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(TrafficSearchError, match="holds float32, the manifest says float16"):
        open_index(copy)
