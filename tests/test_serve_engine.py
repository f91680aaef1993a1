"""The service over a real index built by trafficsearch.index and opened by trafficsearch.search.SearchEngine
(the colour test model, so the expected ranking is known exactly)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from trafficsearch.data.labels import write_labels
from trafficsearch.data.records import Record, VehicleAttributes
from trafficsearch.index import build_index
from trafficsearch.search.opener import open_engine
from trafficsearch.serve.app import create_app
from trafficsearch.serve.server import serve_in_thread
from trafficsearch.testing.color import ColorModel, make_color_gallery

torch.set_num_threads(2)
PEDESTRIAN = "1,0,1,0,1,0,0,0,0,0,0,0,0,1,0,0,0,0,0,0,0"
COLORS = ["red", "blue", "green", "white", "black", "yellow"]


def _gallery(root: Path) -> dict[str, str]:
    """12 vehicles (10-letter names) and 6 pedestrians (6-digit names), two of each colour per kind."""
    names = {}
    for i, color in enumerate(COLORS * 2):
        names["abcdefghij"[i % 10] * 9 + "abcdefghijkl"[i] + ".jpg"] = color
    for i, color in enumerate(COLORS):
        names[f"{100_000 + i:06d}.jpg"] = color
    make_color_gallery(root / "gallery", names, size=(48, 64))
    records = []
    for name in names:
        if name[0].isdigit():
            vector = tuple(map(int, PEDESTRIAN.split(",")))
            records.append(Record(name, "pedestrian", PEDESTRIAN, "A female pedestrian.", vector=vector))
        else:
            attrs = VehicleAttributes("red", "Audi")
            records.append(Record(name, "vehicle", "red Audi.", "A red Audi.", vehicle=attrs))
    write_labels(records, root / "labels.txt")
    return names


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("real")
    names = _gallery(root)
    build_index(
        root / "gallery", root / "idx", ColorModel(), labels=root / "labels.txt", workers=0, progress=False
    )
    engine = open_engine(root / "idx", model=ColorModel())
    app = create_app(engine)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield {"engine": engine, "client": client, "names": names, "root": root}


def test_real_index_search_ranks_the_named_colour_first(real: dict) -> None:
    response = real["client"].post("/search", json={"text": "This is a green Sedan.", "k": 3})
    assert response.status_code == 200
    hits = response.json()["hits"]
    assert len(hits) == 3
    assert {real["names"][h["name"]] for h in hits[:3]} == {"green"}  # 2 green vehicles + 1 green pedestrian
    expected = real["engine"].search(["This is a green Sedan."], k=3)[0]
    assert [h["id"] for h in hits] == [h.id for h in expected]


def test_real_index_kind_filter_and_images(real: dict) -> None:
    client = real["client"]
    hits = client.post("/search", json={"text": "a yellow person", "k": 4, "kind": "pedestrian"}).json()[
        "hits"
    ]
    assert len(hits) == 4 and {h["kind"] for h in hits} == {"pedestrian"}
    assert real["names"][hits[0]["name"]] == "yellow"
    image = client.get(hits[0]["image_url"])
    assert image.status_code == 200
    assert image.content == (real["root"] / "gallery" / hits[0]["name"]).read_bytes()
    thumb = client.get(hits[0]["thumb_url"] + "?size=32")
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"  # JPEG


def test_real_index_unknown_ids_and_health(real: dict) -> None:
    client = real["client"]
    count = real["engine"].info()["count"]
    assert client.get(f"/images/{count + 5}").status_code == 404
    assert client.get("/images/..%2Flabels.txt").status_code == 404
    health = client.get("/healthz").json()
    assert health == {
        "ok": True,
        "auth": False,
        "rerank_default": False,  # a single-model index has no re-ranker
        "count": len(real["names"]),
        "model": "color-test-v0",
        "batching": health["batching"],
    }
