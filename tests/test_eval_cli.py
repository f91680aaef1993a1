"""`trafficsearch evaluate`: numbers equal the library's, both input formats, one-line user errors."""

from __future__ import annotations

import json
import sys

import pytest
from PIL import Image

from trafficsearch.cli import main
from trafficsearch.data.labels import read_labels
from trafficsearch.eval.metrics import evaluate
from trafficsearch.eval.submission import write_submission

VEC_M = "0,0,1,0,0,0,1,0,0,0,0,0,0,0,1,0,0,0,0,0,0"
VEC_M_HAT = "0,0,1,0,0,0,1,1,0,0,0,0,0,0,1,0,0,0,0,0,0"
LINES = [
    "a.jpg$white Audi.$This is a white Audi.",
    "b.jpg$white Audi.$A white Audi.",
    "c.jpg$red BMW.$A red BMW.",
    f"000001.jpg${VEC_M}$A walking man who is between 18 and 60 years old. He is in a long sleeve shirt.",
    f"000002.jpg${VEC_M_HAT}$A walking man who is between 18 and 60 years old. He is wearning a hat.",
]
RANKED = [
    ["c.jpg", "a.jpg", "b.jpg"],
    ["b.jpg"],
    ["a.jpg", "c.jpg"],
    ["000002.jpg", "000001.jpg"],
    ["000001.jpg", "000002.jpg"],
]


@pytest.fixture()
def files(tmp_path):
    labels = tmp_path / "val_label.txt"
    labels.write_text("\n".join(LINES) + "\n")
    submission = tmp_path / "submission.json"
    write_submission(submission, [line.split("$")[2] for line in LINES], RANKED)
    return labels, submission


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["trafficsearch", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_equals_library_numbers_for_both_rules(monkeypatch, capsys, files):
    labels, submission = files
    code, out, _ = run_cli(
        monkeypatch,
        capsys,
        "evaluate",
        "--labels",
        labels,
        "--submission",
        submission,
        "--relevance",
        "both",
        "--json",
    )
    assert code == 0
    payload = json.loads(out)
    records = read_labels(labels).records
    for rule in ("equal", "contain"):
        expected = evaluate(records, records, RANKED, rule).to_dict()
        assert payload["results"][rule] == expected  # JSON floats round-trip exactly
    # the contain rule credits 000002 (extra hat) for query 000001, so the numbers differ
    assert (
        payload["results"]["contain"]["overall"]["map_official"]
        > payload["results"]["equal"]["overall"]["map_official"]
    )


def test_infer_txt_is_accepted_and_table_printed(monkeypatch, capsys, files, tmp_path):
    labels, _ = files
    infer = tmp_path / "infer.txt"
    infer.write_text("".join(f"{line}${'$'.join(row)}\n" for line, row in zip(LINES, RANKED, strict=True)))
    code, out, _ = run_cli(monkeypatch, capsys, "evaluate", "--labels", labels, "--submission", infer)
    assert code == 0
    records = read_labels(labels).records
    result = evaluate(records, records, RANKED, "equal")
    assert "relevance 'equal'" in out and "contain" not in out
    for kind in ("overall", "vehicle", "pedestrian"):
        assert kind in out
    assert f"{result.overall.map_official:.4f}" in out
    assert f"{result.per_kind['pedestrian'].map_at_k:.4f}" in out


def test_bad_submission_is_one_line_error(monkeypatch, capsys, files, tmp_path):
    labels, _ = files
    bad = tmp_path / "bad.json"
    write_submission(bad, ["wrong text"] + [line.split("$")[2] for line in LINES[1:]], RANKED)
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", "--labels", labels, "--submission", bad)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err
    assert "query line 1" in err and "'wrong text'" in err


def test_html_needs_images_and_is_written(monkeypatch, capsys, files, tmp_path):
    labels, submission = files
    out_html = tmp_path / "report.html"
    code, _, err = run_cli(
        monkeypatch, capsys, "evaluate", "--labels", labels, "--submission", submission, "--html", out_html
    )
    assert code == 2 and "--images" in err and not out_html.exists()
    images = tmp_path / "images"
    images.mkdir()
    for line in LINES:
        Image.new("RGB", (64, 128), (200, 30, 30)).save(images / line.split("$")[0])
    code, out, _ = run_cli(
        monkeypatch, capsys, "evaluate", "--labels", labels, "--submission", submission,
        "--html", out_html, "--images", images, "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["html"] == str(out_html)
    page = out_html.read_text()
    assert page.count('class="query"') == len(LINES)
    assert page.count("data:image/jpeg;base64,") == sum(len(row) for row in RANKED)


def test_unknown_rule_is_rejected(monkeypatch, capsys, files):
    labels, submission = files
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "evaluate",
        "--labels",
        labels,
        "--submission",
        submission,
        "--relevance",
        "fuzzy",
    )
    assert code == 2 and "fuzzy" in err
