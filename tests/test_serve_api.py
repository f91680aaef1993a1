"""The HTTP API served for real by uvicorn on a loopback port and queried with httpx (and raw sockets)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from trafficsearch.errors import ConfigError
from trafficsearch.serve.app import create_app
from trafficsearch.serve.server import serve_in_thread
from trafficsearch.testing.fake_engine import FakeEngine, _Item

SECRET = b"TOP-SECRET-OUTSIDE-THE-GALLERY"


class _Evil(FakeEngine):
    """An engine whose id 1 resolves outside the gallery: the app must still refuse to serve it."""

    def image_path(self, image_id: int) -> Path:
        if image_id == 1:
            return self.gallery_root.parent / "secret.jpg"
        return super().image_path(image_id)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("serve")
    (base / "secret.jpg").write_bytes(SECRET)
    (base / "secret.txt").write_bytes(SECRET)
    engine = FakeEngine.create(base / "gallery", count=24, seed=3, delay_s=0.02)
    # A symlink inside the gallery that points outside it (id 24).
    os.symlink(base / "secret.jpg", base / "gallery" / "link.jpg")
    engine.items.append(_Item("link.jpg", "vehicle", "a link", frozenset({"link"})))
    app = create_app(engine, max_k=50, max_text_len=200, batch_window_ms=20)
    evil = _Evil(engine.gallery_root, engine.items[:24])
    evil_app = create_app(evil)
    with serve_in_thread(app) as url, serve_in_thread(evil_app) as evil_url:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield {
                "url": url,
                "evil_url": evil_url,
                "engine": engine,
                "app": app,
                "client": client,
                "base": base,
            }


def raw_get(base_url: str, target: str) -> tuple[int, bytes]:
    """Send the request target exactly as written (httpx would normalise '..' away)."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_search_returns_the_engines_ranking_with_urls(world: dict) -> None:
    engine: FakeEngine = world["engine"]
    text = "This is a white Sedan."
    expected = engine.search([text], k=7)[0]
    response = world["client"].post("/search", json={"text": text, "k": 7})
    assert response.status_code == 200
    body = response.json()
    assert body["text"] == text and body["k"] == 7 and body["kind"] is None and body["rerank"] is False
    assert [h["id"] for h in body["hits"]] == [h.id for h in expected]
    assert [h["name"] for h in body["hits"]] == [h.name for h in expected]
    assert [h["score"] for h in body["hits"]] == pytest.approx([h.score for h in expected])
    for hit in body["hits"]:
        assert hit["thumb_url"] == f"/thumbs/{hit['id']}" and hit["image_url"] == f"/images/{hit['id']}"
        assert hit["kind"] in ("vehicle", "pedestrian")


@pytest.mark.parametrize("kind", ["pedestrian", "vehicle"])
def test_kind_filter(world: dict, kind: str) -> None:
    response = world["client"].post("/search", json={"text": "a red person", "k": 50, "kind": kind})
    hits = response.json()["hits"]
    assert hits and {h["kind"] for h in hits} == {kind}
    assert len(hits) == sum(item.kind == kind for item in world["engine"].items)


def test_concurrent_requests_are_micro_batched_with_their_own_k(world: dict) -> None:
    engine: FakeEngine = world["engine"]
    before = len(engine.calls)
    bodies = [
        {"text": f"a {c} Bus", "k": 1 + i % 6, "kind": (None, "vehicle")[i % 2]}
        for i, c in enumerate(["red", "blue", "white", "grey"] * 6)
    ]

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=world["url"], timeout=30) as client:
            return await asyncio.gather(*(client.post("/search", json=b) for b in bodies))

    responses = asyncio.run(fire())
    calls = engine.calls[before:]
    assert [r.status_code for r in responses] == [200] * len(bodies)
    assert sorted(t for texts, *_ in calls for t in texts) == sorted(b["text"] for b in bodies)
    assert len(calls) < len(bodies)
    assert max(len(texts) for texts, *_ in calls) > 1  # some engine call carried several requests
    for body, response in zip(bodies, responses, strict=True):
        expected = engine.search([body["text"]], k=body["k"], kind=body["kind"])[0]
        assert [h["id"] for h in response.json()["hits"]] == [h.id for h in expected]
    health = world["client"].get("/healthz").json()
    assert health["batching"]["largest_batch"] > 1


BAD_BODIES = [
    (b'{"text": ""}', 422, "text"),
    (b'{"text": "   \\t\\n"}', 422, "whitespace"),
    (json.dumps({"text": "x" * 201}).encode(), 422, "at most 200"),
    (b'{"text": "a", "k": 0}', 422, "'k'"),
    (b'{"text": "a", "k": 51}', 422, "'k'"),
    (b'{"text": "a", "k": -3}', 422, "'k'"),
    (b'{"text": "a", "k": "5"}', 422, "'k'"),
    (b'{"text": "a", "k": 2.5}', 422, "'k'"),
    (b'{"text": "a", "kind": "bicycle"}', 422, "'kind'"),
    (b'{"text": "a", "rerank": "yes"}', 422, "'rerank'"),
    (b'{"text": "a", "limit": 5}', 422, "unknown field 'limit'"),
    (b'{"k": 5}', 422, "at least one of text"),
    (b'["a"]', 422, "JSON object"),
    (b'{"text": "a"', 400, "malformed JSON"),
    (b"text=hello", 400, "malformed JSON"),
    (b'{"text": "caf\xe9"}', 400, "UTF-8"),
    (b"\xff\xfe\x00{", 400, "UTF-8"),
    (b"", 400, "empty request body"),
]


@pytest.mark.parametrize(("body", "status", "needle"), BAD_BODIES)
def test_bad_search_input_gets_a_clear_4xx(world: dict, body: bytes, status: int, needle: str) -> None:
    response = world["client"].post("/search", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    detail = response.json()["detail"]  # FastAPI's list form, for every error status
    assert isinstance(detail, list) and needle in " ".join(item["msg"] for item in detail)


def test_oversized_body_is_refused(world: dict) -> None:
    body = json.dumps({"text": "a", "pad": "x" * (13 * 1024 * 1024)}).encode()
    response = world["client"].post("/search", content=body)
    assert response.status_code == 413
    assert "too large" in response.json()["detail"][0]["msg"]


def test_unicode_text_is_accepted(world: dict) -> None:
    response = world["client"].post("/search", json={"text": "Ein weißes Auto 🚗", "k": 2})
    assert response.status_code == 200
    assert response.json()["text"] == "Ein weißes Auto 🚗"


def test_original_image_is_served_byte_for_byte(world: dict) -> None:
    engine: FakeEngine = world["engine"]
    response = world["client"].get("/images/3")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == engine.image_path(3).read_bytes()


def test_thumbnail_fits_the_size_and_is_cached(world: dict) -> None:
    thumbs = world["app"].state.thumbs
    sizes = []
    for size in (32, 64):
        response = world["client"].get(f"/thumbs/5?size={size}")
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.format == "JPEG"
            sizes.append(image.size)
            assert max(image.size) == size  # originals are larger than 64 px
    hits = thumbs.hits
    again = world["client"].get("/thumbs/5?size=64")
    assert again.status_code == 200 and thumbs.hits == hits + 1
    with Image.open(world["engine"].image_path(5)) as original:  # aspect ratio kept
        ratio = original.size[0] / original.size[1]
    assert sizes[1][0] / sizes[1][1] == pytest.approx(ratio, rel=0.1)


@pytest.mark.parametrize("size", ["0", "15", "1025", "big", "-64"])
def test_bad_thumbnail_size_is_422(world: dict, size: str) -> None:
    response = world["client"].get(f"/thumbs/2?size={size}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "size"]


TRAVERSALS = [
    "/images/../secret.txt",
    "/images/../../../../etc/passwd",
    "/images/..%2Fsecret.txt",
    "/images/..%2F..%2F..%2Fetc%2Fpasswd",
    "/images/%2E%2E%2Fsecret.jpg",
    "/images/%252E%252E%252Fsecret.jpg",
    "/images/%25252e%25252e%25252fsecret.jpg",
    "/images//etc/passwd",
    "/images/%2Fetc%2Fpasswd",
    "/images/..\\secret.txt",
    "/images/..%5Csecret.txt",
    "/images/-1",
    "/images/+1",
    "/images/1.0",
    "/images/0x1",
    "/images/1e1",
    "/images/%31%00",
    "/images/%20%31",
    "/images/24",
    "/images/25",
    "/images/99999999999999999999999",
    "/images/secret.jpg",
    "/images/link.jpg",
    "/thumbs/../secret.jpg",
    "/thumbs/..%2Fsecret.jpg",
    "/thumbs/%252e%252e%252fsecret.jpg",
    "/thumbs/-1",
    "/thumbs/24",
    "/thumbs/abc?size=64",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_path_escapes_get_404_and_never_the_file(world: dict, target: str) -> None:
    status, body = raw_get(world["url"], target)
    assert status == 404
    assert SECRET not in body and b"root:" not in body


@pytest.mark.parametrize("target", ["/images/1", "/thumbs/1", "/images/01"])
def test_engine_paths_outside_the_gallery_are_refused(world: dict, target: str) -> None:
    status, body = raw_get(world["evil_url"], target)
    assert status == 404
    assert SECRET not in body
    assert raw_get(world["evil_url"], "/images/2")[0] == 200  # the same app serves gallery files


def test_healthz_reports_count_and_model(world: dict) -> None:
    health = world["client"].get("/healthz").json()
    assert health["ok"] is True
    assert health["count"] == len(world["engine"].items)
    assert health["model"] == "fake-word-overlap"


def test_page_static_files_and_docs(world: dict) -> None:
    client = world["client"]
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'id="q"' in page.text and "static/app.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    for asset in ("/static/app.js", "/static/style.css"):
        response = client.get(asset)
        assert response.status_code == 200
        assert "http://" not in response.text and "https://" not in response.text
    schema = client.get("/openapi.json").json()
    assert {"/search", "/images/{image_id}", "/thumbs/{image_id}", "/healthz"} <= set(schema["paths"])
    request_schema = schema["paths"]["/search"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert request_schema["additionalProperties"] is False
    assert request_schema["properties"]["k"]["maximum"] == 50
    assert client.get("/docs").status_code == 200


def test_engine_failure_is_a_clear_500_and_service_recovers(tmp_path: Path) -> None:
    class Flaky(FakeEngine):
        def search(self, texts, k=10, kind=None, where=None, rerank=False):  # noqa: ANN001, ANN201
            if any("explode" in t for t in texts):
                raise RuntimeError("CUDA out of memory")
            return super().search(texts, k=k, kind=kind)

    base = FakeEngine.create(tmp_path / "g", count=6)
    engine = Flaky(base.gallery_root, base.items)
    with serve_in_thread(create_app(engine, batch_window_ms=0)) as url:
        bad = httpx.post(f"{url}/search", json={"text": "explode"}, timeout=10)
        assert bad.status_code == 500 and "CUDA out of memory" in bad.json()["detail"][0]["msg"]
        good = httpx.post(f"{url}/search", json={"text": "red", "k": 2}, timeout=10)
        assert good.status_code == 200 and len(good.json()["hits"]) == 2


def test_create_app_needs_a_gallery_root(tmp_path: Path) -> None:
    class NoRoot(FakeEngine):
        def info(self) -> dict:
            return {"count": len(self.items), "model": "m"}

    base = FakeEngine.create(tmp_path / "g", count=2)
    engine = NoRoot(base.gallery_root, base.items)
    del engine.gallery_root
    with pytest.raises(ConfigError, match="gallery_root"):
        create_app(engine)
    app = create_app(engine, gallery_root=tmp_path / "g")
    assert app.state.gallery_root == (tmp_path / "g").resolve()


def test_api_docs_are_served_offline(world: dict) -> None:
    client = world["client"]
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/docs-static/swagger-ui-bundle.js" in page.text and "cdn" not in page.text.lower()
    js = client.get("/docs-static/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    assert client.get("/openapi.json").json()["paths"]["/search"]
