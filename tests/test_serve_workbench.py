"""The analyst's workbench in real headless Chromium, over a real colour index (an image's vector is its mean
colour, so "upload red finds red" is exact): upload, similar, a parsed attribute toggled, paging with the
browser's Back button, the keyboard viewer, exports; once without auth (loopback) and once with a token,
as a non-loopback bind requires."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from trafficsearch.data.labels import write_labels
from trafficsearch.data.records import Record, VehicleAttributes
from trafficsearch.eval.submission import read_submission
from trafficsearch.index import build_index
from trafficsearch.search.engine import SearchEngine
from trafficsearch.search.opener import open_engine
from trafficsearch.serve.app import create_app
from trafficsearch.serve.security import Token
from trafficsearch.serve.server import serve_in_thread
from trafficsearch.testing.color import COLOR_WORDS, ColorModel, make_color_gallery

torch.set_num_threads(2)
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
COLORS = ["red", "blue", "green", "white", "black", "yellow", "orange", "purple"]
PEDESTRIAN = "1,0,1,0,1,0,0,0,0,0,0,1,0,1,0,0,0,0,0,0,0"
TOKEN = Token("analyst", "s3cret-token-0123456789")
SHOTS = Path(__file__).resolve().parents[1] / "docs"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> SearchEngine:
    root = tmp_path_factory.mktemp("bench")
    # per colour: two vehicles (wide crops) and a pedestrian (a tall one), labelled with their kind
    vehicles = {f"{c}{i}.jpg": c for i in range(2) for c in COLORS}
    pedestrians = {f"{c}2.jpg": c for c in COLORS}
    make_color_gallery(root / "gallery", vehicles, size=(96, 64))
    make_color_gallery(root / "gallery", pedestrians, size=(40, 96))
    records = [
        Record(n, "vehicle", "Audi.", f"A {c} Audi.", vehicle=VehicleAttributes(c, "Audi"))
        for n, c in vehicles.items()
    ]
    records += [
        Record(
            n, "pedestrian", PEDESTRIAN, "A female pedestrian.", vector=tuple(map(int, PEDESTRIAN.split(",")))
        )
        for n in pedestrians
    ]
    write_labels(records, root / "labels.txt")
    build_index(
        root / "gallery", root / "idx", ColorModel(), labels=root / "labels.txt", workers=0, progress=False
    )
    return open_engine(root / "idx", model=ColorModel())


@pytest.fixture(scope="module", params=["loopback", "token"])
def served(request: pytest.FixtureRequest, engine: SearchEngine) -> Iterator[tuple[str, str]]:
    kwargs = {"tokens": [TOKEN], "require_auth": True} if request.param == "token" else {}
    with serve_in_thread(create_app(engine, batch_window_ms=0, **kwargs)) as url:
        yield url, request.param


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


def _colour(name: str) -> str:
    return name.split(".")[0].rstrip("0123456789")


def _names(page) -> list[str]:  # noqa: ANN001
    return page.eval_on_selector_all("#results li .name", "els => els.map(e => e.textContent)")


def test_workbench(browser, served, tmp_path: Path) -> None:  # noqa: ANN001
    url, mode = served
    context = browser.new_context(accept_downloads=True, viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url + "/")
    if mode == "token":
        page.wait_for_function("() => document.getElementById('status').textContent === 'token needed'")
        page.fill("#token", TOKEN.secret)
        page.dispatch_event("#token", "change")
        assert page.evaluate("sessionStorage.getItem('trafficsearch-token')") == TOKEN.secret
    page.wait_for_function("() => document.getElementById('status').textContent.includes('24 images')")

    # upload an image: results are its colour, thumbnails load (signed URLs when a token is needed)
    red = tmp_path / "red.png"
    Image.new("RGB", (40, 40), tuple(int(c * 255) for c in COLOR_WORDS["red"])).save(red)
    page.fill("#k", "3")
    page.set_input_files("#file", str(red))
    page.wait_for_function("() => document.querySelectorAll('#results li').length === 3")
    assert {_colour(n) for n in _names(page)} == {"red"}
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img')].every(i => i.naturalWidth > 0)"
    )

    # "similar" on a result: more like that image
    page.click("#example-clear")
    page.fill("#q", "a blue car")
    page.press("#q", "Enter")
    page.wait_for_function("() => document.querySelector('#results .name').textContent.startsWith('blue')")
    page.click("#results li:nth-child(2) .similar")
    page.wait_for_function("() => new URLSearchParams(location.search).has('similar')")
    page.wait_for_function("() => document.querySelector('#example-label').textContent.startsWith('similar')")
    assert {_colour(n) for n in _names(page)} == {"blue"}
    page.click("#example-clear")  # the example stays (mixed with the text) until it is removed
    assert page.is_hidden("#example")

    # the parsed query: a pedestrian attribute shown, toggled as a boost, and the kind as a filter
    page.fill("#q", "A female pedestrian in a green shirt with a backpack")
    page.press("#q", "Enter")
    page.wait_for_selector("#parsed .chip")
    chips = page.eval_on_selector_all("#parsed .chip", "els => els.map(e => e.textContent)")
    assert "kind: pedestrian" in chips and "Backpack" in chips and "Female" in chips
    page.click("#parsed .chip:text-is('Backpack')")
    page.wait_for_function("() => new URLSearchParams(location.search).getAll('boost').includes('Backpack')")
    page.wait_for_selector("#parsed .chip.on:text-is('Backpack')")

    # paging forward, then the browser's Back button steps back to the first page
    page.fill("#q", "something green")
    page.fill("#k", "4")
    page.press("#q", "Enter")
    page.wait_for_function("() => location.search.includes('something+green')")
    first_page = _names(page)
    page.click("#next")
    page.wait_for_function("() => document.querySelector('#results .rank').textContent === '#5'")
    assert "offset=4" in page.url and not set(_names(page)) & set(first_page)
    page.go_back()
    page.wait_for_function("() => document.querySelector('#results .rank').textContent === '#1'")
    assert _names(page) == first_page and "offset" not in page.url
    page.go_back()  # the search before: the boosted pedestrian query
    page.wait_for_function("() => document.getElementById('q').value.startsWith('A female')")

    # keyboard in the viewer: arrows step, Escape closes
    page.go_forward()
    page.wait_for_function("() => document.querySelector('#results .rank').textContent === '#1'")
    page.click("#results li:nth-child(1) .thumb")
    page.wait_for_function("() => document.getElementById('viewer').open")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.getElementById('viewer-caption').textContent.startsWith('#2')")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("() => document.getElementById('viewer-caption').textContent.startsWith('#1')")
    page.wait_for_function("() => document.getElementById('viewer-img').naturalWidth > 0")
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.getElementById('viewer').open")

    # camera and time filters go to the API as `where` (this index stores no cameras: nothing matches)
    page.fill("#camera", "c001, c002")
    page.fill("#time-from", "0")
    page.press("#q", "Enter")
    page.wait_for_function("() => location.search.includes('camera=')")
    page.wait_for_function("() => document.getElementById('empty').textContent.startsWith('No images match')")
    assert page.eval_on_selector_all("#results li", "els => els.length") == 0
    page.fill("#camera", "")
    page.fill("#time-from", "")
    page.press("#q", "Enter")
    page.wait_for_function("() => !location.search.includes('camera=')")
    page.wait_for_function("() => document.querySelectorAll('#results li').length === 4")

    # exports: current results as competition JSON and CSV, and a whole query file
    with page.expect_download() as got:
        page.click("#download")
    submission = json.loads(Path(got.value.path()).read_text())
    assert submission["results"][0]["image_names"] == first_page
    with page.expect_download() as got:
        page.click("#download-csv")
    rows = list(csv.DictReader(io.StringIO(Path(got.value.path()).read_text())))
    assert [r["image_name"] for r in rows] == first_page and rows[0]["rank"] == "1"
    queries = tmp_path / "queries.txt"
    queries.write_text("a yellow car\na black car\n")
    with page.expect_download() as first_download:
        page.set_input_files("#queries", str(queries))
    exported = json.loads(Path(first_download.value.path()).read_text())
    checked = read_submission(Path(first_download.value.path()), queries=["a yellow car", "a black car"])
    assert checked.texts == ["a yellow car", "a black car"]  # the library reader accepts the export
    assert checked.ranked_names[0] == exported["results"][0]["image_names"]
    assert [r["text"] for r in exported["results"]] == ["a yellow car", "a black car"]
    assert {_colour(n) for n in exported["results"][0]["image_names"][:3]} == {"yellow"}
    if mode == "loopback":
        page.fill("#q", "A female pedestrian in a green shirt with a backpack")
        page.fill("#k", "6")
        page.press("#q", "Enter")
        page.wait_for_function("() => location.search.includes('female')")
        page.click("#parsed .chip:text-is('Backpack')")
        page.wait_for_selector("#parsed .chip.on:text-is('Backpack')")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#results img')].every(i => i.naturalWidth > 0)"
        )
        page.screenshot(path=str(SHOTS / "screenshot-search.png"), full_page=True)
    context.close()
    assert errors == []
