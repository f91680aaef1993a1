"""Data set generation: competition layout, valid labels, test-style queries, resume, CLI."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from trafficsearch.cli import app
from trafficsearch.data.labels import read_labels, read_queries
from trafficsearch.data.layout import split
from trafficsearch.data.synth.generate import (
    GENERATOR_VERSION,
    generate_dataset,
    is_complete_jpeg,
    render_labels,
)
from trafficsearch.data.synth.grammar import sample_records
from trafficsearch.errors import ConfigError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    counts = generate_dataset(root, 60, 20, seed=5, noise_rate=0.2, n_test=30, workers=1, progress=False)
    return root, counts


def test_layout_labels_and_images(dataset):
    root, counts = dataset
    assert counts == {"train": 60, "val": 20, "test": 30}
    for name in ("train", "val", "test"):
        s = split(root, name)
        labels = read_labels(s.labels)
        assert not labels.skipped and len(labels.records) == counts[name]
        for r in labels.records:
            path = s.images / r.image
            assert is_complete_jpeg(path)
            with Image.open(path) as im:
                w, h = im.size
                assert (w > h) if r.kind == "vehicle" else (h > w)
    train_names = {r.image for r in read_labels(split(root, "train").labels).records}
    val_names = {r.image for r in read_labels(split(root, "val").labels).records}
    assert not train_names & val_names


def test_test_split_has_composed_vehicle_queries(dataset):
    root, _ = dataset
    s = split(root, "test")
    records = read_labels(s.labels).records
    assert read_queries(s.queries) == [r.text for r in records]
    vehicles = [r for r in records if r.kind == "vehicle"]
    assert vehicles and all(r.vehicle.color and r.vehicle.brand and r.vehicle.type for r in vehicles)
    assert all(r.image.startswith("vehicle_") for r in vehicles)
    train = read_labels(split(root, "train").labels).records
    assert not any(
        r.vehicle.color and r.vehicle.brand and r.vehicle.type for r in train if r.kind == "vehicle"
    )


def test_noise_keeps_clean_labels_beside_the_noisy_ones(dataset):
    root, _ = dataset
    noisy = read_labels(split(root, "train").labels).records
    clean = read_labels(root / "train" / "train_label_clean.txt").records
    assert [r.image for r in noisy] == [r.image for r in clean]
    changed = sum(a.attributes != b.attributes for a, b in zip(noisy, clean, strict=True))
    assert 0 < changed < len(clean) // 2


def test_resume_skips_complete_images_and_redoes_broken_ones(tmp_path):
    records = sample_records(12, np.random.default_rng(1))
    images = tmp_path / "imgs"
    assert render_labels(records, images, seed=2, workers=1, progress=False) == 12
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    assert render_labels(records, images, seed=2, workers=1, progress=False) == 0
    broken = images / records[0].image
    broken.write_bytes(broken.read_bytes()[:50])  # a file cut short by a crash outside atomic writes
    (images / records[1].image).unlink()
    assert render_labels(records, images, seed=2, workers=1, progress=False) == 2
    after = {p.name: p.read_bytes() for p in images.iterdir()}
    assert after == before  # re-rendered files are byte-identical


def test_parallel_render_matches_serial(tmp_path):
    records = sample_records(70, np.random.default_rng(3))
    render_labels(records, tmp_path / "a", seed=1, workers=1, progress=False)
    render_labels(records, tmp_path / "b", seed=1, workers=2, progress=False)
    for r in records:
        assert (tmp_path / "a" / r.image).read_bytes() == (tmp_path / "b" / r.image).read_bytes()


def test_resume_refuses_other_arguments(dataset):
    root, _ = dataset
    with pytest.raises(ConfigError, match="same arguments"):
        generate_dataset(root, 61, 20, seed=5, noise_rate=0.2, n_test=30, workers=1, progress=False)


def test_a_data_set_from_an_older_renderer_is_rendered_again_not_mixed(tmp_path):
    import json

    generate_dataset(tmp_path, 6, 4, seed=1, workers=1, progress=False)
    images = split(tmp_path, "train").images
    fresh = {p.name: p.read_bytes() for p in images.iterdir()}
    for p in images.iterdir():
        p.write_bytes(b"\xff\xd8 an older renderer's image \xff\xd9")  # a complete JPEG to the resume check
    manifest = tmp_path / "synth.json"
    data = json.loads(manifest.read_text())
    data["params"]["version"] = GENERATOR_VERSION - 1
    manifest.write_text(json.dumps(data))
    generate_dataset(tmp_path, 6, 4, seed=1, workers=1, progress=False)
    assert {p.name: p.read_bytes() for p in images.iterdir()} == fresh
    assert json.loads(manifest.read_text())["params"]["version"] == GENERATOR_VERSION
    data["params"]["n_train"] = 7  # other arguments as well: still refused
    manifest.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="same arguments"):
        generate_dataset(tmp_path, 6, 4, seed=1, workers=1, progress=False)


def test_cli_generate_render_and_sheet(tmp_path):
    runner = CliRunner()
    out = tmp_path / "data"
    result = runner.invoke(
        app,
        [
            "synth",
            "generate",
            "--out",
            str(out),
            "--train",
            "10",
            "--val",
            "6",
            "--seed",
            "1",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(list((out / "train" / "train_images").glob("*.jpg"))) == 10
    result = runner.invoke(
        app,
        [
            "synth",
            "render",
            "--labels",
            str(out / "val" / "val_label.txt"),
            "--out",
            str(tmp_path / "cam"),
            "--domain",
            "camera",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "cam").glob("*.jpg"))) == 6
    sheet = tmp_path / "sheet.png"
    result = runner.invoke(app, ["synth", "sheet", str(out / "train"), "--out", str(sheet), "--n", "8"])
    assert result.exit_code == 0, result.output
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.width > 200 and im.height > 200
