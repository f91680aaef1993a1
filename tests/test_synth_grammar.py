"""Synthetic label grammar: captions follow the competition rules and the real val frequencies."""

from __future__ import annotations

import re

import numpy as np
import pytest

from trafficsearch.data.labels import read_labels, write_labels
from trafficsearch.data.query_parse import parse_query
from trafficsearch.data.records import VehicleAttributes
from trafficsearch.data.synth.grammar import (
    apply_label_noise,
    caption_for_vector,
    sample_pedestrian_record,
    sample_records,
    sample_vehicle_record,
    val_attribute_frequencies,
    val_vehicle_form_rates,
    vehicle_text,
)
from trafficsearch.data.vocab import BAG_ORDER


def _vec(*on: int) -> tuple[int, ...]:
    return tuple(int(i in on) for i in range(21))


def test_clothing_form_writes_sleeve_pattern_and_skirt():
    rng = np.random.default_rng(0)
    text = caption_for_vector(_vec(0, 2, 4, 13, 16, 20), rng)
    assert text.startswith(("A pedestrian who is female", "A female pedestrian", "A walking woman"))
    assert "with her body facing the camera" in text
    assert "She is in a" in text and "short sleeve" in text
    assert "logo" in text and "skirt or dress" in text
    assert text.endswith(".") and "wearning" not in text


def test_accessory_form_hides_clothing_and_orders_items():
    rng = np.random.default_rng(1)
    text = caption_for_vector(_vec(2, 6, 7, 8, 14, 15, 19), rng, boots=True)
    second = text.split(". ", 1)[1]
    assert re.fullmatch(r"He is wearning a hat,glasses,(a longcoat|a coat that is long),boots\.", second)
    assert "sleeve" not in text and "stripe" not in text


def test_only_first_bag_is_written():
    rng = np.random.default_rng(2)
    for _ in range(20):
        text = caption_for_vector(_vec(0, 2, 5, 10, 11, 12, 13), rng)
        assert "shoulder" in text and "backpack" not in text and "objects" not in text
    text = caption_for_vector(_vec(0, 2, 5, 11, 12, 13), rng)
    assert "backpack" in text and "objects" not in text


def test_vehicle_text_articles():
    rng = np.random.default_rng(3)
    texts = {vehicle_text(VehicleAttributes(color="orange", brand="Audi"), rng) for _ in range(40)}
    assert texts == {"This is an orange Audi.", "An orange Audi."}
    texts = {vehicle_text(VehicleAttributes(type="SUV"), rng) for _ in range(40)}
    assert texts == {"This is a SUV.", "A SUV."}


def test_sampled_captions_parse_back_to_their_vector():
    rng = np.random.default_rng(4)
    for _ in range(2000):
        record = sample_pedestrian_record(rng)
        parsed = parse_query(record.text)
        assert parsed.kind == "pedestrian"
        assert parsed.agrees_with(record.vector), record.text
        assert parsed.attributes[0] == record.vector[0]
        # the first present bag is always recoverable
        first_bag = next((i for i in BAG_ORDER if record.vector[i]), None)
        if first_bag is not None:
            assert parsed.attributes[first_bag] == 1


def test_attribute_frequencies_match_val():
    rng = np.random.default_rng(5)
    vectors = np.array([sample_pedestrian_record(rng, f"{i:06d}.jpg").vector for i in range(5000)])
    assert np.allclose(vectors.mean(axis=0), val_attribute_frequencies(), atol=0.02)


def test_vehicle_forms_match_val_and_test_style_has_three_parts():
    rng = np.random.default_rng(6)
    forms = {"color_brand": 0, "type": 0, "brand": 0}
    for _ in range(3000):
        v = sample_vehicle_record(rng).vehicle
        assert v is not None and not (v.color and v.brand and v.type)
        forms["color_brand" if v.color else ("type" if v.type else "brand")] += 1
    for form, rate in val_vehicle_form_rates().items():
        assert forms[form] / 3000 == pytest.approx(rate, abs=0.025)
    for _ in range(300):
        record = sample_vehicle_record(rng, test_style=True)
        v = record.vehicle
        assert v is not None and v.color and v.brand and v.type
        assert record.text.endswith(f"{v.color} {v.brand} {v.type}.")
        assert parse_query(record.text).vehicle == v


def test_records_round_trip_through_label_files(tmp_path):
    rng = np.random.default_rng(7)
    records = sample_records(300, rng)
    path = tmp_path / "labels.txt"
    write_labels(records, path)
    parsed = read_labels(path)
    assert not parsed.skipped and [r.to_line() for r in parsed.records] == [r.to_line() for r in records]
    names = [r.image for r in records]
    assert len(set(names)) == len(names)
    kinds = [r.kind for r in records]
    assert kinds == sorted(kinds, key=lambda k: k != "vehicle")  # vehicles first, as in the real files
    for r in records:
        pattern = r"[a-z]{10}\.jpg" if r.kind == "vehicle" else r"\d{6}\.jpg"
        assert re.fullmatch(pattern, r.image)


def test_label_noise_swaps_a_share_of_labels_and_keeps_images():
    rng = np.random.default_rng(8)
    records = sample_records(2000, rng)
    noisy = apply_label_noise(records, 0.1, np.random.default_rng(9))
    assert [r.image for r in noisy] == [r.image for r in records]
    changed = [(a, b) for a, b in zip(records, noisy, strict=True) if a.attributes != b.attributes]
    assert 0.07 < len(changed) / len(records) < 0.13
    assert all(a.kind == b.kind for a, b in changed)
    texts = {r.text for r in records}
    assert all(b.text in texts for _, b in changed)  # a wrong caption is another record's real caption
    assert apply_label_noise(records, 0.0, rng) == records
