"""clip-retrieval's own packaged web front (PyPI clip-retrieval, front/build), served offline from another
origin, searches our service in headless Chromium: its /indices-list and /knn-service calls get answers it
shows, and CORS lets exactly that origin in."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from trafficsearch.index import build_index
from trafficsearch.search.opener import open_engine
from trafficsearch.serve.app import create_app
from trafficsearch.serve.server import serve_in_thread
from trafficsearch.testing.color import ColorModel, make_color_gallery
from trafficsearch.testing.service import free_port

torch.set_num_threads(2)
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
_SPEC = importlib.util.find_spec("clip_retrieval")
FRONT = Path(_SPEC.submodule_search_locations[0]).parent / "front" / "build" if _SPEC else None  # type: ignore[union-attr]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or FRONT is None or not (FRONT / "index.html").is_file(),
    reason="needs Chromium and clip-retrieval's packaged front",
)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("front")
    make_color_gallery(
        root / "g", {f"{c}{i}.jpg": c for i in range(3) for c in ("red", "blue", "green", "white")}
    )
    build_index(root / "g", root / "idx", ColorModel(), workers=0, progress=False)
    engine = open_engine(root / "idx", model=ColorModel())
    front_port = free_port()
    front_origin = f"http://127.0.0.1:{front_port}"
    back = create_app(engine, batch_window_ms=0, cors_origins=[front_origin])
    with serve_in_thread(back) as back_url:
        front = FastAPI()

        @front.get("/config.json")
        async def config() -> JSONResponse:
            return JSONResponse(
                {"defaultBackend": back_url, "defaultIndex": "trafficsearch", "urlColumn": "url"}
            )

        front.mount("/", StaticFiles(directory=FRONT, html=True))
        with serve_in_thread(front, port=front_port) as front_url:
            yield front_url, back_url


def test_clip_front_searches_our_service(servers: tuple[str, str]) -> None:
    from playwright.sync_api import sync_playwright

    front_url, back_url = servers
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = browser.new_page()
        calls: list[str] = []
        page.on("request", lambda r: calls.append(r.url) if r.url.startswith(back_url) else None)
        page.goto(f"{front_url}/?back={back_url}&index=trafficsearch&query=a+green+car")
        page.wait_for_function(
            "(back) => [...document.querySelector('clip-front').shadowRoot.querySelectorAll('img')]"
            ".some(i => i.src.startsWith(back + '/images/') && i.naturalWidth > 0)",
            arg=back_url,
            timeout=30_000,
        )
        shown = page.evaluate(
            "(back) => [...document.querySelector('clip-front').shadowRoot.querySelectorAll('img')]"
            ".map(i => i.src).filter(s => s.startsWith(back + '/images/'))",
            back_url,
        )
        browser.close()
    direct = httpx.post(back_url + "/knn-service", json={"text": "a green car", "num_images": 3}).json()
    assert [u.split("/images/")[1] for u in shown[:3]] == [str(r["id"]) for r in direct]
    assert all(r["caption"].startswith("green") for r in direct)
    assert any(u.endswith("/indices-list") for u in calls) and any(u.endswith("/knn-service") for u in calls)
    assert len(shown) >= 3
