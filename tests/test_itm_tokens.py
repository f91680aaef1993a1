"""Stored ITM image tokens: re-ranking with them scores as encoding on the fly does (fp16 tolerance), needs
no image file, and falls back to encoding for another model, a re-merged index or no tokens at all."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from trafficsearch.index import build_index
from trafficsearch.index.itm_tokens import TOKENS_FILE, has_itm_tokens, load_itm_tokens, write_itm_tokens
from trafficsearch.search.engine import SearchEngine
from trafficsearch.search.opener import open_engine
from trafficsearch.search.rerank import ItmRerankStage
from trafficsearch.testing.color import ColorModel, make_color_gallery

torch.set_num_threads(1)
TEXTS = ["A red car.", "A blue van.", "A green pedestrian."]


@pytest.fixture(scope="module")
def blip():
    from trafficsearch.models.blip import create_blip

    return create_blip("blip-tiny", seed=0).eval()


@pytest.fixture()
def index_dir(tmp_path: Path) -> Path:
    colours = ["red", "blue", "green", "purple", "yellow", "cyan"] * 2
    make_color_gallery(tmp_path / "g", {f"i{i:02d}.jpg": c for i, c in enumerate(colours)})
    build_index(tmp_path / "g", tmp_path / "idx", ColorModel(), workers=0, progress=False)
    return tmp_path / "idx"


def _rerank(stage: ItmRerankStage, engine: SearchEngine):
    return stage(TEXTS, engine.candidates(TEXTS, 8))


def test_stored_tokens_score_like_on_the_fly_encoding_without_the_images(index_dir: Path, blip) -> None:
    engine = open_engine(index_dir, model=ColorModel())
    live = ItmRerankStage(blip, engine.data, k=6, form="seed")
    assert live.stored is None  # nothing stored yet: encodes
    want = _rerank(live, engine)
    pixels = torch.stack([live._load_row(r) for r in range(engine.data.count)])

    entry = write_itm_tokens(index_dir, blip, progress=False)
    expected_tokens = blip.itm_image_tokens(pixels)
    assert entry["shape"] == list(expected_tokens.shape) and entry["dtype"] == "float16"
    assert json.loads((index_dir / "manifest.json").read_text())["itm_tokens"] == entry
    stored = np.load(index_dir / TOKENS_FILE, mmap_mode="r")
    np.testing.assert_allclose(stored, expected_tokens.numpy(), rtol=1e-3, atol=1e-3)

    shutil.rmtree(Path(engine.data.gallery_root))  # stored tokens need no image file
    engine = open_engine(index_dir, model=ColorModel())
    fast = ItmRerankStage(blip, engine.data, k=6, form="seed")
    assert fast.stored is not None and len(fast.stored) == engine.data.count
    got = _rerank(fast, engine)
    assert fast.pixels.misses == 0  # no image decoded, no ViT run
    for a, b in zip(want, got, strict=True):
        np.testing.assert_allclose(b.scores, a.scores, atol=2e-3)
        assert a.rows.tolist() == b.rows.tolist()


def test_fallback_for_another_model_a_remerged_index_or_a_broken_file(index_dir: Path, blip) -> None:
    from trafficsearch.models.blip import create_blip

    write_itm_tokens(index_dir, blip, progress=False)
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert has_itm_tokens(index_dir, blip)
    other = create_blip("blip-tiny", seed=1).eval()  # other weights: other tokens
    assert load_itm_tokens(index_dir, manifest, other) is None
    engine = open_engine(index_dir, model=ColorModel())
    stage = ItmRerankStage(other, engine.data, k=6, form="seed")
    assert stage.stored is None
    _rerank(stage, engine)
    assert stage.pixels.misses > 0  # it encoded the candidates itself
    remerged = {**manifest, "files": {**manifest["files"], "vectors": "vectors.000000000000.npy"}}
    assert load_itm_tokens(index_dir, remerged, blip) is None  # rows of another merge
    (index_dir / TOKENS_FILE).write_bytes(b"not a npy file")
    assert load_itm_tokens(index_dir, manifest, blip) is None
    assert load_itm_tokens(index_dir, {k: v for k, v in manifest.items() if k != "itm_tokens"}, blip) is None


def test_ensemble_index_stores_the_rerankers_tokens_and_the_engine_uses_them(tmp_path: Path) -> None:
    from trafficsearch.search.ensemble import build_ensemble_index

    config = Path(__file__).resolve().parents[1] / "src/trafficsearch/configs/ensembles/tiny-test.yaml"
    make_color_gallery(tmp_path / "g", {f"i{i}.jpg": c for i, c in enumerate(["red", "blue", "green"] * 4)})
    build = {"progress": False, "workers": 0}
    build_ensemble_index(config, tmp_path / "g", tmp_path / "plain", itm_tokens=False, **build)
    build_ensemble_index(config, tmp_path / "g", tmp_path / "fast", progress=False, workers=0)
    assert not list((tmp_path / "plain").rglob(TOKENS_FILE))
    assert len(list((tmp_path / "fast").rglob(TOKENS_FILE))) == 1
    plain, fast = open_engine(tmp_path / "plain"), open_engine(tmp_path / "fast")
    assert plain.rerank_stages[0].stored is None and fast.rerank_stages[0].stored is not None
    a = plain.search(TEXTS, k=12, rerank=True)
    b = fast.search(TEXTS, k=12, rerank=True)
    for x, y in zip(a, b, strict=True):
        assert [h.name for h in x] == [h.name for h in y]
        np.testing.assert_allclose([h.score for h in y], [h.score for h in x], atol=2e-3)
    assert fast.rerank_stages[0].pixels.misses == 0


def test_tokens_of_another_member_are_matched_to_the_engine_rows_by_path(index_dir: Path, blip) -> None:
    from types import SimpleNamespace

    from trafficsearch.search.itm_tokens import find_stored_tokens

    write_itm_tokens(index_dir, blip, progress=False)
    member = open_engine(index_dir, model=ColorModel()).data
    paths = list(member.metadata.paths)
    reference = SimpleNamespace(  # an engine whose rows are the member's in reverse order, no tokens
        dir=index_dir.parent / "elsewhere", manifest={}, metadata=SimpleNamespace(paths=paths[::-1])
    )
    stored = find_stored_tokens(reference, blip, [member])
    assert stored is not None
    own = np.load(index_dir / TOKENS_FILE)
    np.testing.assert_array_equal(stored.get([0, 1]).numpy(), own[[len(paths) - 1, len(paths) - 2]])
    stranger = SimpleNamespace(dir=reference.dir, manifest={}, metadata=SimpleNamespace(paths=["x.jpg"]))
    assert find_stored_tokens(stranger, blip, [member]) is None  # other images: not usable
