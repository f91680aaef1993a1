"""The HTTP API filters on an index's extra metadata columns (from `index build --metadata`): the request
schema lists them, a filter on one narrows the hits, and an unknown column is a 422 naming the field."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from trafficsearch.index import build_index
from trafficsearch.search.opener import open_engine
from trafficsearch.serve.app import create_app
from trafficsearch.serve.server import serve_in_thread
from trafficsearch.testing.color import ColorModel, make_color_gallery

COLORS = {"r1.jpg": "red", "r2.jpg": "red", "r3.jpg": "red", "b1.jpg": "blue", "g1.jpg": "green"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("serve-meta")
    make_color_gallery(root / "g", COLORS)
    (root / "m.csv").write_text(
        "name,camera,lane\nr1.jpg,c1,1\nr2.jpg,c2,2\nr3.jpg,c1,\nb1.jpg,c1,1\ng1.jpg,c2,2\n", encoding="utf-8"
    )
    build_index(root / "g", root / "idx", ColorModel(), metadata=root / "m.csv", workers=0, progress=False)
    app = create_app(open_engine(root / "idx", model=ColorModel()))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


def _names(client: httpx.Client, where: dict) -> list[str]:
    response = client.post("/search", json={"text": "red", "k": 5, "where": where})
    assert response.status_code == 200, response.text
    return [h["name"] for h in response.json()["hits"]]


def test_extra_metadata_columns_filter_through_the_api(client: httpx.Client) -> None:
    assert set(_names(client, {"lane": "1"})) == {"r1.jpg", "b1.jpg"}
    assert _names(client, {"lane": ["2"], "camera": "c2"})[0] == "r2.jpg"
    assert set(_names(client, {})) == set(COLORS)
    schema = client.get("/openapi.json").json()
    assert "'lane'" in str(schema["paths"]["/search"]["post"]["requestBody"])


def test_an_unknown_column_is_a_422_naming_where(client: httpx.Client) -> None:
    response = client.post("/search", json={"text": "red", "where": {"speed": 3}})
    assert response.status_code == 422
    assert "where" in response.text and "lane" in response.text
