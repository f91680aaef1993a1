"""HTML report: parsed back to check the query blocks, right/wrong marks, thumbnails and metrics."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import pytest
from PIL import Image

from trafficsearch.data.records import Record, parse_vehicle_attribute
from trafficsearch.eval.metrics import evaluate, judge
from trafficsearch.eval.report import sample_queries, thumbnail_data_uri, write_html_report

BASE = (0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0)


class ReportParser(HTMLParser):
    """Collects sections (query blocks) with their figures, and the metrics table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[dict] = []
        self.cells: list[str] = []
        self._in_cell = False
        self._in_text = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "section" and "query" in classes:
            self.sections.append(
                {"index": int(a["data-index"]), "kind": a["data-kind"], "figures": [], "text": ""}
            )
        elif tag == "figure" and "hit" in classes:
            self.sections[-1]["figures"].append({"right": "right" in classes, "src": None, "missing": False})
        elif tag == "img" and self.sections and self.sections[-1]["figures"]:
            self.sections[-1]["figures"][-1]["src"] = a["src"]
        elif tag == "div" and "missing" in classes:
            self.sections[-1]["figures"][-1]["missing"] = True
        elif tag == "td":
            self._in_cell = True
        elif tag == "p" and "text" in classes:
            self._in_text = True

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_cell = False
        if tag == "p":
            self._in_text = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells.append(data)
        if self._in_text:
            self.sections[-1]["text"] += data


def _dataset(tmp_path, n_vehicles=8, n_pedestrians=8):
    images = tmp_path / "images"
    images.mkdir()
    colors = ["white", "red"]
    gallery: list[Record] = []
    for i in range(n_vehicles):
        attrs = f"{colors[i % 2]} Audi."
        gallery.append(
            Record(f"v{i}.jpg", "vehicle", attrs, f"A {attrs} <b>", vehicle=parse_vehicle_attribute(attrs))
        )
    for i in range(n_pedestrians):
        vector = tuple(1 if j == 0 and i % 2 else b for j, b in enumerate(BASE))
        gallery.append(
            Record(f"p{i}.jpg", "pedestrian", ",".join(map(str, vector)), "A person.", vector=vector)
        )
    for i, record in enumerate(gallery):
        if record.image != "v3.jpg":  # one image is missing on disk
            Image.new("RGB", (200, 100 + 10 * i), (20 * i % 255, 100, 150)).save(images / record.image)
    names = [g.image for g in gallery]
    ranked = [names[i:] + names[:i] for i in range(len(gallery))]
    ranked = [row[:10] for row in ranked]
    return images, gallery, ranked


def test_report_marks_every_thumbnail_like_the_metric(tmp_path):
    images, gallery, ranked = _dataset(tmp_path)
    scores = [[1.0 - j / 10 for j in range(len(row))] for row in ranked]
    out = tmp_path / "report.html"
    result = write_html_report(
        out, gallery, gallery, ranked, images, "equal", n_queries=6, seed=1, scores=scores
    )
    parser = ReportParser()
    parser.feed(out.read_text())
    assert len(parser.sections) == 6
    assert {s["kind"] for s in parser.sections} == {"vehicle", "pedestrian"}
    hits = judge(gallery, gallery, ranked, "equal").hits
    for section in parser.sections:
        i = section["index"]
        assert [f["right"] for f in section["figures"]] == list(hits[i, : len(ranked[i])])
        assert section["text"] == gallery[i].text  # escaped in HTML, read back intact
        for figure, name in zip(section["figures"], ranked[i], strict=True):
            assert figure["missing"] == (name == "v3.jpg")
            if not figure["missing"]:
                assert figure["src"].startswith("data:image/jpeg;base64,")
                thumb = Image.open(io.BytesIO(base64.b64decode(figure["src"].split(",", 1)[1])))
                assert thumb.format == "JPEG" and max(thumb.size) <= 112
    assert f"{result.overall.map_official:.4f}" in parser.cells
    assert result.overall.map_official == evaluate(gallery, gallery, ranked, "equal").overall.map_official
    assert "0.900" in out.read_text()  # the second score of each row
    assert "<b>" not in out.read_text().split("<body>", 1)[1].replace("<b>equal</b>", "")


def test_sample_queries_is_balanced_reproducible_and_fills_from_the_bigger_kind(tmp_path):
    _, gallery, _ = _dataset(tmp_path, n_vehicles=3, n_pedestrians=20)
    picked = sample_queries(gallery, 10, seed=5)
    assert picked == sample_queries(gallery, 10, seed=5) and picked == sorted(set(picked))
    kinds = [gallery[i].kind for i in picked]
    assert kinds.count("vehicle") == 3 and kinds.count("pedestrian") == 7
    balanced = [gallery[i].kind for i in sample_queries(gallery, 6, seed=0)]
    assert balanced.count("vehicle") == 3 and balanced.count("pedestrian") == 3
    assert len(sample_queries(gallery, 100, seed=0)) == len(gallery)


def test_thumbnail_of_an_unreadable_file_is_none(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert thumbnail_data_uri(bad) is None
    assert thumbnail_data_uri(tmp_path / "absent.jpg") is None


@pytest.mark.parametrize("rule", ["equal", "contain"])
def test_report_header_names_the_rule(tmp_path, rule):
    images, gallery, ranked = _dataset(tmp_path)
    out = tmp_path / "r.html"
    write_html_report(out, gallery, gallery, ranked, images, rule, n_queries=2)
    assert f"relevance rule <b>{rule}</b>" in out.read_text()
