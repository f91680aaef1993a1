"""Attribute baseline: trains on a tiny competition-layout split, resumes, and ranks matching images first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from trafficsearch.data.labels import write_labels
from trafficsearch.data.records import Record, VehicleAttributes
from trafficsearch.errors import ConfigError
from trafficsearch.index import build_index
from trafficsearch.models.attributes import EMBED_DIM, load_attribute_model, query_vector
from trafficsearch.search.opener import open_engine
from trafficsearch.train.attributes import AttributeTrainConfig, train_attributes

torch.set_num_threads(2)
RGB = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20)}
MALE = "0,0,1,0,1,0,0,0,0,0,0,0,0,1,0,0,0,0,0,0,0"
FEMALE = "1,0,1,0,1,0,0,0,0,0,0,0,0,1,0,0,0,0,0,0,0"


def _pedestrian(female: bool) -> Image.Image:
    image = Image.new("RGB", (12, 24), (128, 128, 128))
    ImageDraw.Draw(image).rectangle((0, 0, 11, 8), fill=(255, 255, 255) if female else (0, 0, 0))
    return image


def _split(root: Path, name: str, per_class: int) -> list[Record]:
    images = root / name / f"{name}_images"
    images.mkdir(parents=True)
    records = []
    for color, rgb in RGB.items():
        for i in range(per_class):
            image = f"{color}{i}.jpg"
            Image.new("RGB", (24, 16), rgb).save(images / image)
            vehicle = VehicleAttributes(color, "Audi")
            records.append(Record(image, "vehicle", f"{color} Audi.", f"A {color} Audi.", vehicle=vehicle))
    for female in (False, True):
        for i in range(per_class):
            image = f"{'f' if female else 'm'}{i:05d}.jpg"
            _pedestrian(female).save(images / image)
            vector = FEMALE if female else MALE
            text = f"A {'female' if female else 'male'} pedestrian."
            records.append(
                Record(image, "pedestrian", vector, text, vector=tuple(map(int, vector.split(","))))
            )
    write_labels(records, root / name / f"{name}_label.txt")
    return records


def test_query_vector_selects_stated_attributes() -> None:
    v = query_vector("This is a red Audi Sedan.")
    assert v.shape == (EMBED_DIM,) and v.sum() == 4  # kind, colour, brand, type
    assert query_vector("a photo").sum() == 0
    female = query_vector("A female pedestrian.")
    assert female.sum() == 2  # kind + Female present


def test_train_resume_and_rank(tmp_path: Path) -> None:
    _split(tmp_path / "data", "train", per_class=6)
    cfg = AttributeTrainConfig(
        root=str(tmp_path / "data"),
        out=str(tmp_path / "run"),
        image_size=16,
        width=8,
        depth=2,
        epochs=3,
        batch_size=12,
        lr=1e-2,
    )
    last = train_attributes(cfg, progress=False)
    state = json.loads((last / "state.json").read_text())
    assert state["epoch"] == 3 and len(state["losses"]) == 3
    cfg.epochs = 25
    train_attributes(cfg, progress=False)  # resumes at epoch 3
    state = json.loads((last / "state.json").read_text())
    assert state["epoch"] == 25 and len(state["losses"]) == 25
    assert state["losses"][-1] < state["losses"][0]

    model = load_attribute_model(last)
    gallery = tmp_path / "gallery"
    _split(gallery, "test", per_class=2)
    build_index(
        gallery / "test" / "test_images",
        tmp_path / "idx",
        model,
        model_spec=str(last),
        workers=0,
        progress=False,
    )
    engine = open_engine(tmp_path / "idx", model=model)
    for color in RGB:
        hits = engine.search([f"This is a {color} Audi."], k=2)[0]
        assert all(h.name.startswith(color) for h in hits), (color, [h.name for h in hits])
    hits = engine.search(["A female pedestrian."], k=2)[0]
    assert all(h.name.startswith("f") for h in hits), [h.name for h in hits]


def test_bad_train_config_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        AttributeTrainConfig.from_dict({"root": "x", "out": "y", "epoch": 3})
    assert info.value.field == "epoch"
