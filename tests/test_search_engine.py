"""The search engine: filters never leak other kinds, even with small k; repeated queries hit the cache."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from trafficsearch.data.labels import write_labels
from trafficsearch.data.records import Record, VehicleAttributes
from trafficsearch.errors import TrafficSearchError
from trafficsearch.index import build_index
from trafficsearch.search import Candidates, SearchEngine
from trafficsearch.search.opener import open_engine
from trafficsearch.testing.color import ColorModel, make_color_gallery

torch.set_num_threads(1)
PEDESTRIAN = "1,0,1,0,1,0,0,0,0,0,0,0,0,1,0,0,0,0,0,0,0"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> SearchEngine:
    root = tmp_path_factory.mktemp("search")
    # 30 red vehicles, 3 red-ish pedestrians far down the red ranking, plus a few other colours.
    names = {f"v{i:02d}.jpg": "red" for i in range(30)}
    names |= {
        "p00.jpg": "orange",
        "p01.jpg": "magenta",
        "p02.jpg": "yellow",
        "v90.jpg": "blue",
        "u00.jpg": "red",
    }
    make_color_gallery(root / "g", names)
    records = [
        Record(n, "vehicle", "red Audi.", "A red Audi.", vehicle=VehicleAttributes("red", "Audi"))
        for n in names
        if n.startswith("v")
    ] + [
        Record(
            n, "pedestrian", PEDESTRIAN, "A female pedestrian.", vector=tuple(map(int, PEDESTRIAN.split(",")))
        )
        for n in names
        if n.startswith("p")
    ]
    write_labels(records, root / "labels.txt")
    build_index(root / "g", root / "idx", ColorModel(), labels=root / "labels.txt", workers=0, progress=False)
    return open_engine(root / "idx", model=ColorModel())


def test_kind_filter_never_returns_another_kind(engine: SearchEngine) -> None:
    hits = engine.search(["red", "blue"], k=2, kind="pedestrian")
    assert [len(h) for h in hits] == [2, 2]
    assert all(h.kind == "pedestrian" for row in hits for h in row)
    assert hits[0][0].name == "p00.jpg"  # orange is the closest pedestrian to red
    vehicles = engine.search(["red"], k=40, kind="vehicle")[0]
    assert len(vehicles) == 31 and all(h.kind == "vehicle" for h in vehicles)
    assert engine.search(["red"], k=5, kind="unknown")[0][0].name == "u00.jpg"
    assert engine.search(["red"], k=5, kind="no-such-kind") == [[]]


def test_unfiltered_top_k_is_sorted_and_exact(engine: SearchEngine) -> None:
    hits = engine.search(["red"], k=10)[0]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and len(hits) == 10
    vectors = np.asarray(engine.data.vectors, dtype=np.float32)
    query = engine.model.encode_texts(["red"]).numpy()[0]
    best = np.sort(vectors @ query)[::-1][:10]
    assert np.allclose(scores, best, atol=1e-3)


def test_where_filters_on_metadata(engine: SearchEngine) -> None:
    hits = engine.search(["red"], k=3, where={"name": ["v90.jpg", "p02.jpg"]})[0]
    assert {h.name for h in hits} == {"v90.jpg", "p02.jpg"}
    assert engine.search(["red"], k=3, where={"width": {"gt": 1000}}) == [[]]
    with pytest.raises(TrafficSearchError, match="unknown filter field"):
        engine.search(["red"], where={"colour; DROP TABLE images": 1})


def test_repeated_queries_are_encoded_once(engine: SearchEngine) -> None:
    model = engine.model
    before = model.text_calls
    texts = ["green car"] * 50 + ["a cyan one"] * 30 + ["green car"]
    results = engine.search(texts, k=3)
    assert model.text_calls - before == 2
    assert len(results) == len(texts) and results[0] == results[-1]
    engine.search(["green car"], k=3)
    assert model.text_calls - before == 2


def test_stages_see_candidates_and_rerank_flag(engine: SearchEngine) -> None:
    class Reverse:
        depth = 20

        def __init__(self) -> None:
            self.seen: list[int] = []

        def __call__(self, texts: Sequence[str], candidates: list[Candidates]) -> list[Candidates]:
            self.seen = [len(c.rows) for c in candidates]
            return [Candidates(c.rows[::-1], c.scores[::-1]) for c in candidates]

    stage = Reverse()
    engine.rerank_stages.append(stage)
    try:
        plain = engine.search(["red"], k=3)[0]
        assert stage.seen == []  # rerank stages only run when asked
        reranked = engine.search(["red"], k=3, rerank=True)[0]
        assert stage.seen == [20]
        assert reranked[0].score <= plain[-1].score
    finally:
        engine.rerank_stages.remove(stage)


def test_info_and_paths(engine: SearchEngine) -> None:
    info = engine.info()
    assert info["count"] == 35 and info["dim"] == 8 and info["model"] == "color-test-v0"
    assert info["kinds"] == {"pedestrian": 3, "unknown": 1, "vehicle": 31}
    hit = engine.search(["blue"], k=1)[0][0]
    assert hit.name == "v90.jpg" and engine.image_path(hit.id).is_file()
    with pytest.raises(TrafficSearchError, match="no image with id"):
        engine.image_path(10_000)
    with pytest.raises(TrafficSearchError, match="k must be"):
        engine.search(["red"], k=0)


def test_open_missing_index_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TrafficSearchError, match="not an index directory"):
        open_engine(tmp_path, model=ColorModel())


def test_filters_stay_exact_when_the_index_takes_no_selector(
    engine: SearchEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trafficsearch.index import faiss_util

    real = faiss_util.search

    def no_selectors(index, queries, k, params=None, selector=None):  # type: ignore[no-untyped-def]
        if selector is not None:
            raise RuntimeError("selector not supported")
        return real(index, queries, k, params)

    expected = engine.search(["red", "green"], k=2, kind="pedestrian")
    monkeypatch.setattr(faiss_util, "search", no_selectors)
    fallback = engine.search(["red", "green"], k=2, kind="pedestrian")
    assert [[h.name for h in row] for row in fallback] == [[h.name for h in row] for row in expected]
    assert all(h.kind == "pedestrian" for row in fallback for h in row)
