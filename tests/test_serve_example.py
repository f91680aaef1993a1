"""Search by example over a real index (the colour test model: an image's vector is its mean colour), and
clip-retrieval's own ClipClient against a real uvicorn server."""

from __future__ import annotations

import base64
import importlib.util
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from trafficsearch.index import build_index
from trafficsearch.search.example import ExampleQuery, search_example
from trafficsearch.search.opener import open_engine
from trafficsearch.serve.app import create_app
from trafficsearch.serve.server import serve_in_thread
from trafficsearch.testing.color import COLOR_WORDS, ColorModel, make_color_gallery

torch.set_num_threads(2)
COLORS = ["red", "blue", "green", "white", "black", "yellow", "orange", "purple"]
CLIP_CLIENT = (
    Path(
        importlib.util.find_spec("clip_retrieval").submodule_search_locations[0]  # type: ignore[union-attr]
    )
    / "clip_client.py"
    if importlib.util.find_spec("clip_retrieval")
    else None
)


def _png(color: str, size: tuple[int, int] = (30, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, tuple(int(c * 255) for c in COLOR_WORDS[color])).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("example")
    names = {f"{c}{i}.jpg": c for i in range(2) for c in COLORS}
    make_color_gallery(root / "gallery", names, size=(32, 32))
    build_index(root / "gallery", root / "idx", ColorModel(), workers=0, progress=False)
    engine = open_engine(root / "idx", model=ColorModel())
    with (
        serve_in_thread(create_app(engine, batch_window_ms=0)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield {"engine": engine, "client": client, "url": url, "names": names}


def _colour_of(name: str) -> str:
    return name.rstrip(".jpg").rstrip("0123456789")


def test_an_uploaded_image_finds_its_colour(real: dict) -> None:
    for color in ("red", "purple", "white"):
        body = {"image": base64.b64encode(_png(color)).decode(), "k": 2}
        response = real["client"].post("/search", json=body)
        assert response.status_code == 200, response.text
        data = response.json()
        assert [_colour_of(h["name"]) for h in data["hits"]] == [color, color]
        assert len(data["image_sha256"]) == 64 and data["parsed"] is None


def test_more_like_this_uses_the_stored_vector(real: dict) -> None:
    engine = real["engine"]
    target = next(h for h in engine.search(["a blue thing"], k=1)[0])
    response = real["client"].post("/search", json={"image_id": target.id, "k": 3})
    hits = response.json()["hits"]
    assert hits[0]["id"] == target.id and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert _colour_of(hits[1]["name"]) == "blue"
    # the oracle: exact cosine against the stored vectors, computed here with numpy
    vectors = np.asarray(engine.data.vectors, dtype=np.float32)
    q = vectors[engine.data.metadata.row_of_id(target.id)]
    order = np.argsort(-(vectors @ q), kind="stable")[:3]
    assert sorted(h["score"] for h in hits) == pytest.approx(sorted((vectors @ q)[order].tolist()), abs=1e-3)


def test_text_and_image_mix_as_a_weighted_sum(real: dict) -> None:
    red_image = base64.b64encode(_png("red")).decode()

    def top(weight: float) -> str:
        body = {"text": "something blue", "image": red_image, "image_weight": weight, "k": 1}
        return _colour_of(real["client"].post("/search", json=body).json()["hits"][0]["name"])

    assert top(1.0) == "red" and top(0.0) == "blue"
    # red (1,0,0) + blue (0,0,1) in equal parts is closest to purple (.5,0,.5) in colour space
    assert top(0.5) == "purple"


def test_paging_with_offset_continues_the_ranking(real: dict) -> None:
    full = real["client"].post("/search", json={"text": "a green car", "k": 8}).json()["hits"]
    page2 = real["client"].post("/search", json={"text": "a green car", "k": 4, "offset": 4}).json()["hits"]
    assert [h["id"] for h in page2] == [h["id"] for h in full[4:]]
    assert [h["rank"] for h in page2] == [5, 6, 7, 8]


def test_parsed_query_is_returned(real: dict) -> None:
    data = (
        real["client"].post("/search", json={"text": "A female pedestrian with a hat and a backpack."}).json()
    )
    parsed = data["parsed"]
    assert parsed["kind"] == "pedestrian"
    stated = {a["name"]: a["value"] for a in parsed["attributes"]}
    assert stated["Female"] == 1 and stated["Hat"] == 1 and stated["Backpack"] == 1
    car = real["client"].post("/search", json={"text": "This is a white Audi Sedan."}).json()["parsed"]
    assert car["kind"] == "vehicle" and car["vehicle"] == {"color": "white", "brand": "Audi", "type": "Sedan"}


def test_where_filter_applies_to_example_search(real: dict) -> None:
    engine = real["engine"]
    hits = search_example(engine, ExampleQuery(texts=[("red", 1.0)]), k=3, where={"name": ["blue0.jpg"]})
    assert [h.name for h in hits] == ["blue0.jpg"]


@pytest.mark.skipif(CLIP_CLIENT is None, reason="clip-retrieval is not installed")
def test_clip_retrieval_client_gets_text_and_image_results(real: dict, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("clip_client", CLIP_CLIENT)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    indices = httpx.get(real["url"] + "/indices-list").json()
    client = module.ClipClient(url=real["url"] + "/knn-service", indice_name=indices[0], num_images=3)
    by_text = client.query(text="a yellow truck")
    assert len(by_text) == 3 and {_colour_of(r["caption"]) for r in by_text[:2]} == {"yellow"}
    assert all(r["url"].startswith(real["url"] + "/images/") for r in by_text)
    assert (
        httpx.get(by_text[0]["url"]).content
        == (Path(real["engine"].info()["gallery_root"]) / by_text[0]["caption"]).read_bytes()
    )
    image = tmp_path / "query.png"
    image.write_bytes(_png("green"))
    by_image = client.query(image=str(image))
    assert [_colour_of(r["caption"]) for r in by_image[:2]] == ["green", "green"]
    assert by_image[0]["similarity"] >= by_image[-1]["similarity"]
    meta = httpx.post(
        real["url"] + "/metadata", json={"ids": [by_image[0]["id"]], "indice_name": indices[0]}
    ).json()
    assert meta[0]["id"] == by_image[0]["id"] and meta[0]["metadata"]["caption"] == by_image[0]["caption"]
    refused = httpx.post(
        real["url"] + "/knn-service",
        json={
            "image_url": "http://169.254.169.254/",
            "num_images": 2,
            "modality": "image",
            "indice_name": indices[0],
        },
    )
    assert refused.status_code == 400 and "never fetches" in refused.json()["detail"][0]["msg"]


def test_ensemble_example_search_is_fused_like_text(tmp_path: Path) -> None:
    import yaml

    from trafficsearch.search import fusion
    from trafficsearch.search.ensemble import build_ensemble_index

    models = {"color0": ColorModel(0), "color2": ColorModel(2)}
    gallery = {f"v{i:02d}.jpg": COLORS[i % len(COLORS)] for i in range(16)}
    make_color_gallery(tmp_path / "g", gallery)
    config = {
        "name": "two-colours",
        "normalization": "zscore",
        "members": [
            {"name": "a", "model": "color0", "weight": 1.0},
            {"name": "b", "model": "color2", "weight": 3.0},
        ],
    }
    (tmp_path / "ens.yaml").write_text(yaml.safe_dump(config))
    build_ensemble_index(
        tmp_path / "ens.yaml", tmp_path / "g", tmp_path / "idx", models=models, progress=False, workers=0
    )
    engine = open_engine(tmp_path / "idx", models=models)
    # text through search_example ranks exactly as the engine's own fused text search
    for text in ("a red car", "something purple"):
        fused_text = [h.name for h in engine.search([text], k=16)[0]]
        assert [h.name for h in search_example(engine, ExampleQuery(texts=[(text, 1.0)]), k=16)] == fused_text
    # an image: each member encodes it with its own model; oracle fused here with numpy
    image = Image.open(io.BytesIO(_png("orange")))
    rows = []
    for member in engine.first_stage.members:  # type: ignore[union-attr]
        vectors = np.asarray(member.data.vectors, dtype=np.float32)[member._perm]
        pixels = torch.stack([member.model.image_transform()(image)])
        q = member.model.encode_images(pixels).numpy()
        rows.append((q / np.linalg.norm(q)) @ vectors.T)
    fused = fusion.fuse_rows(rows, [1.0, 3.0], "zscore")[0]
    expected = [engine.data.metadata.names[i] for i in np.argsort(-fused, kind="stable")][:6]
    got = [h.name for h in search_example(engine, ExampleQuery(images=[(image, 1.0)]), k=6)]
    assert {gallery[n] for n in got[:2]} == {"orange"}
    assert got == expected


def test_camera_and_time_filters_reach_the_engine(tmp_path: Path) -> None:
    """The page's camera/time filter format, on an index whose metadata holds cameras and times (as the
    city-scale indexing writes them; filled here directly in the metadata database)."""
    import sqlite3

    names = {f"{c}{i}.jpg": c for i in range(4) for c in ("red", "blue")}
    make_color_gallery(tmp_path / "g", names)
    build_index(tmp_path / "g", tmp_path / "idx", ColorModel(), workers=0, progress=False)
    (db_path,) = (tmp_path / "idx").glob("metadata.*.sqlite")
    with sqlite3.connect(db_path) as db:
        for name in names:
            i = int(name[-5])
            db.execute(
                "UPDATE images SET camera = ?, time = ? WHERE name = ?", (f"c{i % 2:03d}", 100 * i, name)
            )
    engine = open_engine(tmp_path / "idx", model=ColorModel())
    app = create_app(engine, batch_window_ms=0)
    where = {"camera": ["c001"], "time": {"gte": 150, "lte": 400}}  # cameras c001: i = 1, 3 -> times 100, 300
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        text = client.post("/search", json={"text": "red", "k": 8, "where": where}).json()
        assert [h["name"] for h in text["hits"]] == ["red3.jpg", "blue3.jpg"]
        assert text["where"] == where
        image = base64.b64encode(_png("blue")).decode()
        by_image = client.post("/search", json={"image": image, "k": 8, "where": where}).json()
        assert [h["name"] for h in by_image["hits"]] == ["blue3.jpg", "red3.jpg"]
        none = client.post("/search", json={"text": "red", "where": {"camera": "c999"}}).json()
        assert none["hits"] == []


def test_knn_service_embedding_input_and_index_name(real: dict) -> None:
    engine, client = real["engine"], real["client"]
    target = engine.search(["something orange"], k=1)[0][0]
    vector = engine.vector(target.id).tolist()
    body = {"embedding_input": vector, "num_images": 2, "modality": "image", "indice_name": "trafficsearch"}
    hits = client.post("/knn-service", json=body).json()
    assert hits[0]["id"] == target.id and hits[0]["similarity"] == pytest.approx(1.0, abs=1e-3)
    short = client.post("/knn-service", json={**body, "embedding_input": vector[:-1]})
    assert short.status_code == 422 and short.json()["detail"][0]["loc"] == ["body", "embedding_input"]
    huge = client.post("/knn-service", json={**body, "embedding_input": [1e300] * len(vector)})
    assert huge.status_code == 422  # float32 would overflow to inf and the scores to NaN
    unknown = client.post("/knn-service", json={**body, "indice_name": "laion5B"})
    assert unknown.status_code == 422 and "trafficsearch" in unknown.json()["detail"][0]["msg"]
    text = client.post("/knn-service", json={"text": "red", "modality": "text", "num_images": 2})
    assert text.status_code == 400 and "caption index" in text.json()["detail"][0]["msg"]
    spec = client.get("/openapi.json").json()
    knn = spec["paths"]["/knn-service"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert knn["properties"]["embedding_input"]["anyOf"][0]["maxItems"] == len(vector)
