"""The web page driven in real headless Chromium: type a query, see thumbnails load, enlarge, download."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from trafficsearch.serve.app import create_app
from trafficsearch.serve.server import serve_in_thread
from trafficsearch.testing.fake_engine import FakeEngine

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeEngine]]:
    engine = FakeEngine.create(tmp_path_factory.mktemp("gallery"), count=30, seed=7)
    with serve_in_thread(create_app(engine)) as url:
        yield url, engine


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, served):  # noqa: ANN001, ANN201
    context = browser.new_context(accept_downloads=True, viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(served[0] + "/")
    yield page
    context.close()
    assert errors == []  # no JavaScript errors on the page


def test_query_shows_thumbnails_that_load(page, served) -> None:  # noqa: ANN001
    url, engine = served
    text = "This is a white Sedan."
    page.fill("#q", text)
    page.fill("#k", "6")
    page.press("#q", "Enter")
    page.wait_for_selector("#results li img")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    widths = page.eval_on_selector_all("#results img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == 6 and all(w > 0 for w in widths)
    names = page.eval_on_selector_all("#results .name", "els => els.map(e => e.textContent)")
    assert names == [hit.name for hit in engine.search([text], k=6)[0]]
    assert "6 results" in page.text_content("#summary")
    assert page.is_hidden("#error")
    assert "30 images" in page.text_content("#status")


def test_kind_filter_click_to_enlarge_and_download(page, served, tmp_path: Path) -> None:  # noqa: ANN001
    url, engine = served
    page.fill("#q", "a female pedestrian in a red shirt")
    page.select_option("#kind", "pedestrian")
    page.click("#go")
    page.wait_for_selector("#results li img")
    kinds = page.eval_on_selector_all("#results .kind", "els => els.map(e => e.textContent)")
    assert kinds and set(kinds) == {"pedestrian"}

    page.click("#results li:first-child button.thumb")
    page.wait_for_function("() => document.getElementById('viewer').open")
    page.wait_for_function("() => document.getElementById('viewer-img').naturalWidth > 0")
    first = page.text_content("#results li:first-child .name")
    assert page.get_attribute("#viewer-img", "src").startswith("/images/")
    assert first in page.text_content("#viewer-caption")
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.getElementById('viewer').open")

    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / "results.json"
    info.value.save_as(saved)
    submission = json.loads(saved.read_text())
    expected = engine.search(["a female pedestrian in a red shirt"], k=10, kind="pedestrian")[0]
    assert submission == {
        "results": [{"text": "a female pedestrian in a red shirt", "image_names": [h.name for h in expected]}]
    }


def test_errors_are_shown_on_the_page(page) -> None:  # noqa: ANN001
    page.fill("#q", "a red bus")
    page.evaluate("document.getElementById('k').removeAttribute('max')")  # let the server say it
    page.fill("#k", "500")
    page.click("#go")
    page.wait_for_selector("#error:not([hidden])")
    message = page.text_content("#error")
    assert "422" in message and "'k'" in message
    assert page.eval_on_selector_all("#results li", "els => els.length") == 0


def test_shared_link_runs_the_query(browser, served) -> None:  # noqa: ANN001
    url, engine = served
    context = browser.new_context()
    page = context.new_page()
    page.goto(url + "/?q=a+blue+Bus&k=3&kind=vehicle")
    page.wait_for_selector("#results li img")
    names = page.eval_on_selector_all("#results .name", "els => els.map(e => e.textContent)")
    assert names == [hit.name for hit in engine.search(["a blue Bus"], k=3, kind="vehicle")[0]]
    assert page.input_value("#kind") == "vehicle"
    context.close()
