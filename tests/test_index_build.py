"""Index build: right answers, exact resume, add == rebuild, ranks + merge == single build, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trafficsearch.errors import IndexError_, TrafficSearchError
from trafficsearch.index import add_images, build_index, merge_index, open_index
from trafficsearch.index.files import shard_path
from trafficsearch.search.opener import open_engine
from trafficsearch.testing.color import ColorModel, make_color_gallery

torch.set_num_threads(1)

COLORS = ["red", "green", "blue", "yellow", "cyan", "magenta", "white", "black", "orange", "purple"]


def gallery(root: Path, n: int = 10, prefix: str = "img") -> dict[str, str]:
    names = {f"{prefix}{i:03d}.jpg": COLORS[i % len(COLORS)] for i in range(n)}
    make_color_gallery(root, names)
    return names


def by_name(index_dir: Path) -> dict[str, np.ndarray]:
    data = open_index(index_dir)
    return {name: np.asarray(data.vectors[row]) for row, name in enumerate(data.metadata.names)}


class Boom(Exception):
    pass


def test_build_then_search_finds_the_right_image(tmp_path: Path) -> None:
    names = gallery(tmp_path / "g", 10)
    model = ColorModel()
    result = build_index(tmp_path / "g", tmp_path / "idx", model, shard_size=3, workers=2, progress=False)
    assert result.merged and result.manifest["count"] == 10
    engine = open_engine(tmp_path / "idx", model=model)
    for color in ("red", "blue", "white"):
        hits = engine.search([f"This is a {color} car."], k=1)[0]
        assert names[hits[0].name] == color
        assert hits[0].score == pytest.approx(1.0, abs=1e-2)
        assert engine.image_path(hits[0].id) == (tmp_path / "g" / hits[0].name).resolve()
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["dim"] == 8 and manifest["faiss"]["factory"] == "Flat"
    assert manifest["model"]["checkpoint_sha256"] == "color-0"
    assert manifest["preprocessing"]["image_size"] == 8


def test_resume_after_kill_reencodes_nothing_finished(tmp_path: Path) -> None:
    gallery(tmp_path / "g", 11)
    model = ColorModel()
    done: list[int] = []

    def kill_after_two(shard: int) -> None:
        done.append(shard)
        if len(done) == 2:
            raise Boom

    with pytest.raises(Boom):
        build_index(
            tmp_path / "g",
            tmp_path / "idx",
            model,
            shard_size=3,
            workers=0,
            progress=False,
            on_shard_done=kill_after_two,
        )
    assert not (tmp_path / "idx" / "manifest.json").exists()
    with pytest.raises(IndexError_, match="has not finished"):
        open_index(tmp_path / "idx")
    finished_mtimes = {i: shard_path(tmp_path / "idx", i).stat().st_mtime_ns for i in done}

    resumed: list[int] = []
    result = build_index(
        tmp_path / "g",
        tmp_path / "idx",
        model,
        shard_size=3,
        workers=0,
        progress=False,
        on_shard_done=resumed.append,
    )
    assert resumed == [2, 3] and result.shards_done_before == 2 and result.encoded == 11 - 6
    assert {i: shard_path(tmp_path / "idx", i).stat().st_mtime_ns for i in done} == finished_mtimes

    build_index(tmp_path / "g", tmp_path / "ref", model, shard_size=3, workers=0, progress=False)
    got, ref = by_name(tmp_path / "idx"), by_name(tmp_path / "ref")
    assert list(got) == list(ref)
    assert all(np.array_equal(got[n], ref[n]) for n in ref)


def test_rerun_of_finished_build_encodes_nothing(tmp_path: Path) -> None:
    gallery(tmp_path / "g", 5)
    model = ColorModel()
    build_index(tmp_path / "g", tmp_path / "idx", model, shard_size=2, workers=0, progress=False)
    again = build_index(tmp_path / "g", tmp_path / "idx", model, shard_size=2, workers=0, progress=False)
    assert again.encoded == 0 and again.shards_done_before == 3 and again.manifest["count"] == 5


def test_manifest_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    gallery(tmp_path / "g", 4)
    build_index(tmp_path / "g", tmp_path / "idx", ColorModel(0), shard_size=2, workers=0, progress=False)
    with pytest.raises(IndexError_) as info:
        build_index(tmp_path / "g", tmp_path / "idx", ColorModel(1), shard_size=2, workers=0, progress=False)
    assert info.value.field == "model_fingerprint" and "color-test-v0" in str(info.value)
    with pytest.raises(IndexError_) as info:
        build_index(tmp_path / "g", tmp_path / "idx", ColorModel(0), shard_size=3, workers=0, progress=False)
    assert info.value.field == "shard_size"
    with pytest.raises(TrafficSearchError, match="not the model this index was built with"):
        open_engine(tmp_path / "idx", model=ColorModel(1))


def test_new_gallery_images_need_index_add(tmp_path: Path) -> None:
    gallery(tmp_path / "g", 4)
    build_index(tmp_path / "g", tmp_path / "idx", ColorModel(), shard_size=2, workers=0, progress=False)
    make_color_gallery(tmp_path / "g", {"zzz.jpg": "red"})
    with pytest.raises(IndexError_, match="index add"):
        build_index(tmp_path / "g", tmp_path / "idx", ColorModel(), shard_size=2, workers=0, progress=False)


def test_add_equals_full_rebuild(tmp_path: Path) -> None:
    model = ColorModel()
    gallery(tmp_path / "g", 7, prefix="a")
    build_index(tmp_path / "g", tmp_path / "idx", model, shard_size=3, workers=0, progress=False)
    before = by_name(tmp_path / "idx")
    new = make_color_gallery(tmp_path / "g", {"b000.jpg": "purple", "b001.jpg": "grey", "c/b002.jpg": "cyan"})
    encoded: list[int] = []
    result = add_images(
        tmp_path / "idx",
        [new[0], tmp_path / "g" / "c", new[1]],
        model=model,
        workers=0,
        progress=False,
        on_shard_done=encoded.append,
    )
    assert result.encoded == 3 and encoded == [3]  # only the new shard was encoded
    build_index(tmp_path / "g", tmp_path / "full", model, shard_size=3, workers=0, progress=False)
    got, ref = by_name(tmp_path / "idx"), by_name(tmp_path / "full")
    assert sorted(got) == sorted(ref) and len(got) == 10
    assert all(np.array_equal(got[n], ref[n]) for n in ref)
    assert all(np.array_equal(got[n], before[n]) for n in before)
    engine = open_engine(tmp_path / "idx", model=model)
    assert engine.search(["grey"], k=1)[0][0].name == "b001.jpg"
    assert engine.search(["cyan"], k=20, where={"path": "c/b002.jpg"})[0][0].name == "c/b002.jpg"
    again = add_images(tmp_path / "idx", [new[0]], model=model, workers=0, progress=False)
    assert again.encoded == 0 and again.manifest["count"] == 10


def test_add_extends_a_trained_ivf_index_without_retraining(tmp_path: Path) -> None:
    model = ColorModel()
    gallery(tmp_path / "g", 40)
    build_index(
        tmp_path / "g", tmp_path / "idx", model, factory="IVF2,Flat", shard_size=16, workers=0, progress=False
    )
    old = open_index(tmp_path / "idx")
    import faiss

    centroids = faiss.extract_index_ivf(old.faiss).quantizer.reconstruct_n(0, 2)
    add_images(
        tmp_path / "idx",
        make_color_gallery(tmp_path / "g", {"new.jpg": "grey"}),
        model=model,
        workers=0,
        progress=False,
    )
    data = open_index(tmp_path / "idx")
    assert data.manifest["faiss"]["factory"] == "IVF2,Flat" and data.faiss.ntotal == 41
    # a trainable index searches its own codes: the vectors file keeps the shards' fp16
    assert data.manifest["vectors_dtype"] == "float16" and data.vectors.dtype == np.float16
    assert np.array_equal(faiss.extract_index_ivf(data.faiss).quantizer.reconstruct_n(0, 2), centroids)


def test_two_ranks_then_merge_equal_single_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gallery(tmp_path / "g", 11)
    model = ColorModel()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    r0 = build_index(tmp_path / "g", tmp_path / "idx", model, shard_size=3, workers=0, progress=False)
    assert not r0.merged and r0.shards_encoded == 2  # shards 0 and 2 of 4
    assert not (tmp_path / "idx" / "manifest.json").exists()
    with pytest.raises(IndexError_, match="not encoded yet"):
        merge_index(tmp_path / "idx")
    monkeypatch.setenv("RANK", "1")
    r1 = build_index(tmp_path / "g", tmp_path / "idx", model, shard_size=3, workers=0, progress=False)
    assert r1.shards_encoded == 2 and r1.merged  # the last rank to finish merges
    merged = merge_index(tmp_path / "idx")  # an explicit merge is idempotent
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    build_index(tmp_path / "g", tmp_path / "single", model, shard_size=3, workers=0, progress=False)
    got, ref = by_name(tmp_path / "idx"), by_name(tmp_path / "single")
    assert list(got) == list(ref) and merged["count"] == 11
    assert all(np.array_equal(got[n], ref[n]) for n in ref)


def test_loader_refuses_inconsistent_files(tmp_path: Path) -> None:
    gallery(tmp_path / "g", 4)
    build_index(tmp_path / "g", tmp_path / "idx", ColorModel(), shard_size=2, workers=0, progress=False)
    manifest_path = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    vectors = tmp_path / "idx" / manifest["files"]["vectors"]
    good = np.load(vectors)
    np.save(vectors, good[:3])
    with pytest.raises(IndexError_, match="shape"):
        open_index(tmp_path / "idx")
    np.save(vectors, good)
    assert open_index(tmp_path / "idx").count == 4
    manifest["files"]["faiss"] = "faiss.000000000000.index"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexError_, match="missing"):
        open_index(tmp_path / "idx")


def test_merge_keeps_only_the_committed_generation(tmp_path: Path) -> None:
    gallery(tmp_path / "g", 4)
    build_index(tmp_path / "g", tmp_path / "idx", ColorModel(), shard_size=2, workers=0, progress=False)
    manifest = merge_index(tmp_path / "idx")
    files = sorted(p.name for p in (tmp_path / "idx").iterdir() if p.suffix in (".npy", ".sqlite", ".index"))
    assert files == sorted(manifest["files"].values())
