"""Submission JSON and infer.txt: round trip, strict validation with located errors, format detection."""

from __future__ import annotations

import json

import pytest

from trafficsearch.data.labels import parse_line
from trafficsearch.errors import DataError
from trafficsearch.eval.submission import (
    detect_format,
    load_ranking,
    read_infer,
    read_submission,
    write_submission,
)

VEC = "0,0,1,0,0,0,1,0,0,0,0,0,0,0,1,0,0,0,0,0,0"
LABELS = [
    "a.jpg$white Audi.$This is a white Audi.",
    f"000001.jpg${VEC}$A walking man who is between 18 and 60 years old. He is in a long sleeve shirt.",
]


def records(tmp_path):
    return [parse_line(line, path=tmp_path / "labels.txt", line=i) for i, line in enumerate(LABELS, start=1)]


def test_round_trip_keeps_order_and_duplicates(tmp_path):
    path = tmp_path / "out" / "submission.json"
    texts = ["q one", "q two", "q one"]
    ranked = [["a.jpg", "a.jpg"], [], ["b.jpg"]]
    write_submission(path, texts, ranked)
    data = json.loads(path.read_text())
    assert data == {"results": [{"text": t, "image_names": r} for t, r in zip(texts, ranked, strict=True)]}
    sub = read_submission(path, texts)
    assert sub.texts == texts and sub.ranked_names == ranked
    assert not list(path.parent.glob(".*.tmp"))  # the atomic writer cleaned up


def test_text_mismatch_names_the_line_and_both_texts(tmp_path):
    path = tmp_path / "s.json"
    write_submission(path, ["first", "second query"], [["a.jpg"], ["b.jpg"]])
    with pytest.raises(DataError) as info:
        read_submission(path, ["first", "2nd query"])
    message = info.value.one_line()
    assert "query line 2" in message and "'second query'" in message and "'2nd query'" in message
    assert info.value.field == "results[1].text"
    with pytest.raises(DataError, match="has 2 results but the query file has 3 lines"):
        read_submission(path, ["first", "second query", "third"])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ('[{"text": "q", "image_names": []}]', "results"),
        ('{"results": {"text": "q"}}', "results"),
        ('{"results": ["q"]}', "expected an object"),
        ('{"results": [{"image_names": []}]}', "'text' is missing"),
        ('{"results": [{"text": "q", "image_names": "a.jpg"}]}', "'image_names' is missing or not a list"),
        ('{"results": [{"text": "q", "image_names": ["a.jpg", 7]}]}', "image name is int 7"),
    ],
)
def test_malformed_submissions_are_data_errors(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match=expected) as info:
        read_submission(path)
    assert str(path) in info.value.one_line()


def test_non_string_name_error_points_at_the_entry(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"results": [{"text": "q", "image_names": []}, {"text": "r", "image_names": [null]}]}')
    with pytest.raises(DataError) as info:
        read_submission(path)
    assert info.value.field == "results[1].image_names[0]"


def test_read_infer_splits_labels_and_predictions(tmp_path):
    path = tmp_path / "infer.txt"
    path.write_text(f"{LABELS[0]}$a.jpg$000001.jpg\n{LABELS[1]}$000001.jpg$a.jpg$a.jpg\n")
    infer = read_infer(path)
    assert [r.image for r in infer.records] == ["a.jpg", "000001.jpg"]
    assert [r.kind for r in infer.records] == ["vehicle", "pedestrian"]
    assert infer.ranked_names == [["a.jpg", "000001.jpg"], ["000001.jpg", "a.jpg", "a.jpg"]]


def test_read_infer_errors_carry_the_line(tmp_path):
    path = tmp_path / "infer.txt"
    path.write_text(f"{LABELS[0]}$a.jpg\n{LABELS[1]}$$a.jpg\n")
    with pytest.raises(DataError) as info:
        read_infer(path)
    assert info.value.line == 2 and "predicted name 1 is empty" in info.value.message
    path.write_text("a.jpg$white Audi.\n")
    with pytest.raises(DataError, match="found 2 field"):
        read_infer(path)


def test_detect_format_by_extension_then_content(tmp_path):
    assert detect_format(tmp_path / "x.json") == "json"
    assert detect_format(tmp_path / "infer.txt") == "infer"
    sniff = tmp_path / "predictions"
    sniff.write_text('  {"results": []}')
    assert detect_format(sniff) == "json"
    sniff.write_text(LABELS[0] + "$a.jpg\n")
    assert detect_format(sniff) == "infer"


def test_load_ranking_accepts_both_formats_and_checks_texts(tmp_path):
    queries = records(tmp_path)
    json_path = tmp_path / "s.json"
    write_submission(json_path, [q.text for q in queries], [["a.jpg"], ["000001.jpg"]])
    assert load_ranking(json_path, queries) == [["a.jpg"], ["000001.jpg"]]
    infer_path = tmp_path / "infer.txt"
    infer_path.write_text(f"{LABELS[0]}$a.jpg\n{LABELS[1]}$000001.jpg\n")
    assert load_ranking(infer_path, queries) == [["a.jpg"], ["000001.jpg"]]
    infer_path.write_text(f"{LABELS[0]}$a.jpg\n{LABELS[0].replace('a.jpg', 'b.jpg')}$000001.jpg\n")
    with pytest.raises(DataError) as info:
        load_ranking(infer_path, queries)
    assert info.value.line == 2 and "line 2 of the label file" in info.value.message
