"""Prompt augmentation on real validation label lines: counts, exact strings, brand-vs-type parsing."""

from __future__ import annotations

import pytest

from trafficsearch.data.labels import parse_line, read_labels
from trafficsearch.data.prompts import (
    expand_record,
    expand_records,
    split_sentences,
    vehicle_caption_in_place,
    vehicle_prompts,
)
from trafficsearch.data.records import Record, VehicleAttributes


@pytest.fixture(scope="module")
def val_records(val_labels_path):
    return read_labels(val_labels_path).records


def by_attribute(records, attribute: str) -> Record:
    return next(r for r in records if r.attributes == attribute)


def test_vehicle_prompts_are_appended_in_place_by_default_as_the_seed_states(val_records):
    record = val_records[0]
    assert record.to_line() == "kcbluaihml.jpg$white Audi.$This is a white Audi."
    assert expand_record(record) == [
        "This is a white Audi. This is a vehicle. The brand of the vehicle is Audi. "
        "The color of the vehicle is white."
    ]


def test_pairs_form_gives_one_pair_per_part_and_no_generic_vehicle_pair(val_records):
    record = val_records[0]
    assert expand_record(record, vehicle_form="pairs") == [
        "This is a white Audi.",
        "The brand of the vehicle is Audi.",
        "The color of the vehicle is white.",
    ]


def test_type_only_vehicle_gets_the_model_prompt(val_records):
    record = by_attribute(val_records, "SUV.")
    assert expand_record(record, vehicle_form="pairs") == [record.text, "The vehicle's model is SUV."]
    assert expand_record(record) == [f"{record.text} This is a vehicle. The vehicle's model is SUV."]


@pytest.mark.parametrize("brand", ["Balong Heavy Truck", "Hongyan"])
def test_brand_only_vehicle_is_a_brand_not_a_type(val_records, brand):
    record = by_attribute(val_records, brand + ".")
    texts = expand_record(record, vehicle_form="pairs")
    assert texts == [record.text, f"The brand of the vehicle is {brand}."]
    (in_place,) = expand_record(record)
    assert in_place == f"{record.text} This is a vehicle. The brand of the vehicle is {brand}."
    assert not any("model is" in t for t in [*texts, in_place])


def test_unknown_vehicle_form_is_refused(val_records):
    with pytest.raises(ValueError, match="vehicle_form"):
        expand_record(val_records[0], vehicle_form="glued")


def test_two_sentence_pedestrian_caption_gives_three_pairs(val_records):
    record = next(r for r in val_records if r.image == "000097.jpg")
    assert expand_record(record) == [
        "A male pedestrian who is an adult person aged 18-60, with his body back to the camera. "
        "He is in a short sleeve shirt with a logo on the upper.",
        "A male pedestrian who is an adult person aged 18-60, with his body back to the camera.",
        "He is in a short sleeve shirt with a logo on the upper.",
    ]


def test_accessory_sentence_with_comma_list_stays_whole():
    line = (
        "000999.jpg$1,0,1,0,1,0,0,1,1,0,0,0,0,1,0,0,0,0,0,0,0$A walking woman who is between 18 and 60 "
        "years old, with her body facing the camera. She is wearning a hat,glasses."
    )
    record = parse_line(line, path="mem", line=1)
    assert split_sentences(record.text) == [
        "A walking woman who is between 18 and 60 years old, with her body facing the camera.",
        "She is wearning a hat,glasses.",
    ]


@pytest.mark.parametrize("form", ["in_place", "pairs"])
def test_counts_on_all_real_val_lines(val_records, form):
    expected_total = 0
    for record in val_records:
        texts = expand_record(record, vehicle_form=form)
        assert len(set(texts)) == len(texts)
        if record.kind == "vehicle":
            v = record.vehicle
            parts = sum(p is not None for p in (v.color, v.brand, v.type))
            if form == "in_place":  # one text per vehicle: the caption, then the generic and part prompts
                assert texts == [vehicle_caption_in_place(record.text, v)]
                assert texts[0].startswith(record.text + " This is a vehicle. ")
                assert texts[0].count(". ") == 1 + parts
            else:
                assert texts[0] == record.text and len(texts) == 1 + parts
                assert "This is a vehicle." not in texts
        else:
            assert texts[0] == record.text  # the original always first
            sentences = record.text.count(". ") + 1
            assert len(texts) == 1 + (sentences if sentences > 1 else 0)
            assert all(t.endswith(".") for t in texts)
            assert " ".join(texts[1:]) == record.text
        expected_total += len(texts)
    pairs = expand_records(val_records, vehicle_form=form)
    assert len(pairs) == expected_total
    pedestrians = [r for r in val_records if r.kind == "pedestrian"]
    assert sum(1 for r, _ in pairs if r.kind == "pedestrian") == 3 * len(pedestrians)  # all 2-sentence
    vehicles = [r for r in val_records if r.kind == "vehicle"]
    if form == "in_place":  # the seed's one pair per vehicle image
        assert sum(1 for r, _ in pairs if r.kind == "vehicle") == len(vehicles)
    assert pairs[0][0] == val_records[0] and pairs[0][1].startswith(val_records[0].text)


def test_switches_keep_only_the_original(val_records):
    vehicle, pedestrian = val_records[0], next(r for r in val_records if r.kind == "pedestrian")
    assert expand_record(vehicle, vehicles=False) == [vehicle.text]
    assert expand_record(pedestrian, pedestrians=False) == [pedestrian.text]
    assert len(expand_records([vehicle, pedestrian], vehicles=False)) == 1 + 3


def test_one_sentence_caption_is_not_duplicated_and_in_memory_vehicle_is_parsed():
    one = Record(image="a.jpg", kind="pedestrian", attributes="", text="A walking man who is a minor.")
    assert expand_record(one) == [one.text]
    raw = Record(
        image="b.jpg", kind="vehicle", attributes="grey Chery Sedan.", text="This is a grey Chery Sedan."
    )
    pairs = expand_record(raw, vehicle_form="pairs")
    assert pairs[1:] == vehicle_prompts(VehicleAttributes("grey", "Chery", "Sedan"))
    assert pairs[1:] == [
        "The brand of the vehicle is Chery.",
        "The vehicle's model is Sedan.",
        "The color of the vehicle is grey.",
    ]
    assert expand_record(raw) == [" ".join([raw.text, "This is a vehicle.", *pairs[1:]])]
