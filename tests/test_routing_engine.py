"""Kind routing: a vehicle query never returns a pedestrian under hard routing; soft only down-weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trafficsearch.data.labels import write_labels
from trafficsearch.data.records import Record, VehicleAttributes
from trafficsearch.errors import ConfigError
from trafficsearch.index import build_index
from trafficsearch.search.engine import SearchEngine
from trafficsearch.search.opener import open_engine
from trafficsearch.search.routing import query_kind
from trafficsearch.testing.color import ColorModel, make_color_gallery

torch.set_num_threads(1)
PED = "1,0,1,0,1,0,0,0,0,0,0,0,0,1,0,0,0,0,0,0,0"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> SearchEngine:
    root = tmp_path_factory.mktemp("route")
    # red pedestrians are the best matches for "red"; the red-ish vehicles are orange
    names = {f"p{i}.jpg": "red" for i in range(6)} | {f"v{i}.jpg": "orange" for i in range(4)}
    names |= {"v9.jpg": "blue", "u0.jpg": "red"}
    make_color_gallery(root / "g", names)
    records = [
        Record(n, "vehicle", "orange Audi.", "An orange Audi.", vehicle=VehicleAttributes("orange", "Audi"))
        for n in names
        if n.startswith("v")
    ] + [
        Record(n, "pedestrian", PED, "A female pedestrian.", vector=tuple(map(int, PED.split(","))))
        for n in names
        if n.startswith("p")
    ]
    write_labels(records, root / "labels.txt")
    build_index(root / "g", root / "idx", ColorModel(), labels=root / "labels.txt", workers=0, progress=False)
    return open_engine(root / "idx", model=ColorModel())


def test_query_kind_rule() -> None:
    assert query_kind("This is a red Audi.") == "vehicle"
    assert query_kind("A woman in red.") == "pedestrian"
    assert query_kind("a photo") is None


def test_hard_routing_never_returns_the_other_kind(engine: SearchEngine) -> None:
    off = engine.search(["This is a red Audi."], k=3)[0]
    assert off[0].kind == "pedestrian"  # without routing, red pedestrians win
    for k in (1, 5, 12):
        hits = engine.search(["This is a red Audi.", "A woman in red."], k=k, route="hard")
        assert all(h.kind != "pedestrian" for h in hits[0])
        assert all(h.kind != "vehicle" for h in hits[1])
    hits = engine.search(["This is a red Audi."], k=12, route="hard")[0]
    assert {h.name for h in hits} == {"v0.jpg", "v1.jpg", "v2.jpg", "v3.jpg", "v9.jpg", "u0.jpg"}
    unrouted = engine.search(["a photo"], k=12, route="hard")[0]  # no kind stated: no routing
    assert [h.name for h in unrouted] == [h.name for h in engine.search(["a photo"], k=12)[0]]


def test_explicit_kind_wins_over_routing(engine: SearchEngine) -> None:
    hits = engine.search(["This is a red Audi."], k=3, kind="pedestrian", route="hard")[0]
    assert [h.kind for h in hits] == ["pedestrian"] * 3


def test_soft_routing_down_weights(engine: SearchEngine) -> None:
    text = "This is a red Audi."
    engine.soft_penalty = 10.0
    try:
        strong = engine.search([text], k=12, route="soft")[0]
    finally:
        engine.soft_penalty = 0.1
    kinds = [h.kind for h in strong]
    assert kinds.index("pedestrian") > max(i for i, k in enumerate(kinds) if k != "pedestrian")
    assert len(strong) == 12  # pedestrians still appear, after every vehicle
    engine.soft_penalty = 0.0
    try:
        same = engine.search([text], k=12, route="soft")[0]
    finally:
        engine.soft_penalty = 0.1
    plain = engine.search([text], k=12)[0]
    assert np.allclose([h.score for h in same], [h.score for h in plain])  # ties may swap names


def test_engine_default_route_and_bad_route(engine: SearchEngine) -> None:
    engine.route = "hard"
    try:
        assert all(h.kind != "pedestrian" for h in engine.search(["A red Audi."], k=5)[0])
        assert engine.search(["A red Audi."], k=1, route="off")[0][0].kind == "pedestrian"
    finally:
        engine.route = "off"
    with pytest.raises(ConfigError, match="route"):
        engine.search(["x"], route="sometimes")
