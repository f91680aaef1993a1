"""ITM re-ranking: combination forms, block vs seed re-sort, a stub scorer that disagrees with the fusion,
and the real BlipRetrieval.itm_scores of a tiny BLIP through the stage and an ensemble index."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from trafficsearch.errors import ConfigError
from trafficsearch.index import build_index
from trafficsearch.search.opener import open_engine
from trafficsearch.search.rerank import ItmRerankStage, combine, merge_reranked
from trafficsearch.search.stages import Candidates
from trafficsearch.testing.color import ColorModel, ColorTransform, make_color_gallery

torch.set_num_threads(1)


def test_combination_forms() -> None:
    fused = np.array([0.02, 0.01, 0.005], np.float32)
    logits = np.array([-1.0, 2.0, 2.0], np.float32)
    seed = combine(fused, logits, "seed")
    assert np.allclose(seed, fused + logits / 3.0)
    assert np.allclose(combine(fused, np.array([0.1, 0.9, 0.5]), "itm_prob"), [0.1, 0.9, 0.5])
    assert np.allclose(combine(fused, logits, "weighted", a=2.0, b=0.5), 2 * fused + 0.5 * logits)
    with pytest.raises(ConfigError, match="form"):
        combine(fused, logits, "product")


def test_block_keeps_the_tail_behind_and_resort_is_the_seed() -> None:
    cand = Candidates(np.array([10, 11, 12, 13]), np.array([0.04, 0.03, 0.02, 0.01], np.float32))
    new = np.array([-0.5, 0.6], np.float32)  # re-scored first two: 11 beats 10, 10 goes negative
    block = merge_reranked(cand, new, "block")
    assert block.rows.tolist() == [11, 10, 12, 13]
    resort = merge_reranked(cand, new, "resort")
    assert resort.rows.tolist() == [11, 12, 13, 10]  # the seed: a negative logit drops below the tail


class StubItm:
    """Scores a pair by how blue the image is: it disagrees with a colour model asked for red."""

    def __init__(self) -> None:
        self.pairs = 0

    def image_transform(self) -> ColorTransform:
        return ColorTransform(8)

    def itm_scores(
        self, texts: Sequence[str], pixels: torch.Tensor, *, batch_size: int = 32, probabilities: bool = False
    ) -> torch.Tensor:
        self.pairs += len(texts)
        blue = pixels[:, 2].mean(dim=(1, 2)) - pixels[:, 0].mean(dim=(1, 2))
        return torch.sigmoid(blue) if probabilities else blue


@pytest.fixture(scope="module")
def color_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rerank")
    names = {"a_red.jpg": "red", "b_purple.jpg": "purple", "c_magenta.jpg": "magenta", "d_blue.jpg": "blue"}
    names |= {f"e{i}.jpg": "green" for i in range(4)}
    make_color_gallery(root / "g", names)
    build_index(root / "g", root / "idx", ColorModel(), workers=0, progress=False)
    return root / "idx"


def test_stage_reorders_when_itm_disagrees(color_index: Path) -> None:
    stub = StubItm()
    engine = open_engine(color_index, model=ColorModel())
    engine.rerank_stages = [ItmRerankStage(stub, engine.data, k=3, form="itm_prob")]
    plain = [h.name for h in engine.search(["red"], k=5)[0]]
    assert plain[0] == "a_red.jpg"
    reranked = [h.name for h in engine.search(["red"], k=5, rerank=True)[0]]
    assert set(reranked[:3]) == set(plain[:3]) and reranked[2] == "a_red.jpg"  # the least blue of the 3
    assert reranked[3:] == plain[3:5]  # the tail keeps its fused order
    pairs = stub.pairs
    engine.search(["red", "red"], k=5, rerank=True)
    assert stub.pairs == pairs + 3 and engine.rerank_stages[0].pixels.misses == 3  # pixels cached per image


def test_real_tiny_blip_itm_scores_through_the_stage(color_index: Path, blip_tiny) -> None:
    blip = blip_tiny
    engine = open_engine(color_index, model=ColorModel())
    stage = ItmRerankStage(blip, engine.data, k=4, form="seed")
    cand = engine.candidates(["A red car."], 6)[0]
    out = stage(["A red car."], [cand])[0]
    assert stage.uses_tokens  # BLIP's ViT tokens are what the stage caches per image
    pixels = torch.stack([stage._load_row(int(r)) for r in cand.rows[:4]])
    logits = blip.itm_scores(["A red car."] * 4, pixels).numpy()
    cached = torch.stack([stage.pixels.get(int(r)) for r in cand.rows[:4]])
    torch.testing.assert_close(cached, blip.itm_image_tokens(pixels))
    expected = combine(cand.scores[:4], logits, "seed")
    order = np.argsort(-expected, kind="stable")
    assert out.rows[:4].tolist() == cand.rows[:4][order].tolist()
    assert np.allclose(out.scores[:4], expected[order], atol=1e-5)
    assert out.rows[4:].tolist() == cand.rows[4:].tolist()


def test_packaged_tiny_ensemble_end_to_end(tmp_path: Path) -> None:
    from trafficsearch.search.ensemble import build_ensemble_index

    config = Path(__file__).resolve().parents[1] / "src/trafficsearch/configs/ensembles/tiny-test.yaml"
    make_color_gallery(tmp_path / "g", {f"i{i}.jpg": c for i, c in enumerate(["red", "blue", "green"] * 4)})
    build_ensemble_index(config, tmp_path / "g", tmp_path / "idx", progress=False, workers=0)
    engine = open_engine(tmp_path / "idx")
    assert yaml.safe_load((tmp_path / "idx" / "ensemble.yaml").read_text())["name"] == "tiny-test"
    plain = engine.search(["A red car."], k=12)[0]
    reranked = engine.search(["A red car."], k=12, rerank=True)[0]
    assert len(plain) == len(reranked) == 12
    assert {h.name for h in reranked[:10]} == {h.name for h in plain[:10]}  # block: ITM reorders the 10 only
    assert [h.name for h in reranked[10:]] == [h.name for h in plain[10:]]


def test_many_queries_rerank_in_cache_sized_passes_with_the_same_result(color_index: Path, blip_tiny) -> None:
    """More candidates than the token cache holds: queries go in passes, each pass's images stay cached."""
    blip = blip_tiny
    engine = open_engine(color_index, model=ColorModel())
    texts = ["A red car.", "A blue car.", "A green car.", "A purple car."]
    cands = engine.candidates(texts, 6)
    roomy = ItmRerankStage(blip, engine.data, k=4, form="seed")
    tight = ItmRerankStage(blip, engine.data, k=4, form="seed", cache_size=8)  # one query per pass
    assert tight.chunk == 1 and roomy.chunk > len(texts)
    for a, b in zip(roomy(texts, cands), tight(texts, cands), strict=True):
        assert a.rows.tolist() == b.rows.tolist()
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    assert len(tight.pixels._store) <= 8


def test_pixel_cache_cold_starts_empty_and_restores() -> None:
    from trafficsearch.search.rerank import PixelCache

    loads: list[int] = []
    cache = PixelCache(lambda row: loads.append(row) or torch.full((2,), float(row)), capacity=4)
    cache.get(1), cache.get(2)
    with cache.cold():
        assert 1 not in cache and 2 not in cache
        assert cache.get(1).tolist() == [1.0, 1.0] and loads == [1, 2, 1]  # loaded again: cold
        cache.put(3, torch.zeros(2))
    assert 1 in cache and 2 in cache and 3 not in cache  # the entries from before, nothing else
    cache.get(2)
    assert loads == [1, 2, 1]
