"""The web pre-training corpus: its own caption forms, valid labels, no name overlap, resume, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from trafficsearch.data.labels import read_labels
from trafficsearch.data.layout import split
from trafficsearch.data.synth.generate import generate_dataset, generate_web_corpus, is_complete_jpeg
from trafficsearch.data.synth.grammar import sample_records
from trafficsearch.data.synth.web import independent_vector, sample_web_records
from trafficsearch.data.vocab import SUBJECT_TEMPLATES
from trafficsearch.errors import ConfigError
from trafficsearch.testing.cli import run_cli


def test_web_captions_differ_from_the_competition_forms():
    web = sample_web_records(400, np.random.default_rng(0))
    comp = sample_records(400, np.random.default_rng(0))
    starts = {t.split("{")[0] for t in SUBJECT_TEMPLATES} | {"This is ", "A ", "An "}
    for r in web:
        assert not any(r.text.startswith(s) for s in starts), r.text
        assert ". " not in r.text  # one alt-text phrase, not the competition's two sentences
    assert not {r.text for r in web} & {r.text for r in comp}
    vehicles = [r for r in web if r.kind == "vehicle"]
    assert len(vehicles) == 200
    for r in vehicles:  # colour and brand always written, the same words as the label says
        assert r.vehicle.color in r.text and r.vehicle.brand in r.text
    full = [r for r in vehicles if r.vehicle.type]
    assert 0.6 < len(full) / len(vehicles) < 0.95  # the competition's train/val never name all three
    assert len({r.vehicle.brand for r in vehicles}) > 45  # uniform brands: the rare ones appear


def test_independent_vectors_keep_the_group_rules_and_add_combinations():
    rng = np.random.default_rng(1)
    vectors = {independent_vector(rng) for _ in range(500)}
    for v in vectors:
        assert sum(v[1:4]) == 1 and sum(v[4:7]) == 1 and sum(v[13:15]) == 1
        assert sum(v[9:13]) <= 1 and sum(v[15:19]) <= 1
        assert not (v[20] and not v[0])  # skirts only on women
    assert len(vectors) > 250


def test_web_corpus_layout_names_and_resume(tmp_path):
    root = tmp_path / "web"
    counts = generate_web_corpus(root, 30, 10, seed=2, workers=1, progress=False)
    assert counts == {"train": 30, "val": 10}
    names = {}
    for name in ("train", "val"):
        s = split(root, name)
        labels = read_labels(s.labels)
        assert not labels.skipped and len(labels.records) == counts[name]
        assert all(is_complete_jpeg(s.images / r.image) for r in labels.records)
        names[name] = {r.image for r in labels.records}
    assert not names["train"] & names["val"]
    comp = tmp_path / "comp"
    generate_dataset(comp, 30, 10, n_test=10, seed=2, workers=1, progress=False)
    comp_names = {
        r.image for n in ("train", "val", "test") for r in read_labels(split(comp, n).labels).records
    }
    assert not (names["train"] | names["val"]) & comp_names
    first = split(root, "train").images / "web_00000001.jpg"
    before = first.read_bytes()
    first.unlink()
    assert generate_web_corpus(root, 30, 10, seed=2, workers=1, progress=False) == counts
    assert first.read_bytes() == before  # resumed: the missing image re-rendered identically
    with pytest.raises(ConfigError, match="same arguments"):
        generate_web_corpus(root, 31, 10, seed=2, workers=1, progress=False)


def test_cli_generate_web_corpus(tmp_path, monkeypatch, capsys):
    out = tmp_path / "web"
    args = ["synth", "generate", "--corpus", "web", "--out", out, "--train", "8", "--val", "4"]
    assert run_cli(monkeypatch, *args, "--workers", "1") == 0
    assert len(list((out / "train" / "train_images").glob("web_*.jpg"))) == 8
    assert run_cli(monkeypatch, *args, "--test", "3") != 0
    assert "--corpus" in capsys.readouterr().err
