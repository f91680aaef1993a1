"""parse_query: every real val caption parses and agrees with its label on every attribute it determines."""

from __future__ import annotations

from trafficsearch.data.labels import read_labels
from trafficsearch.data.query_parse import parse_query
from trafficsearch.data.records import VehicleAttributes


def test_every_real_val_line_parses_and_agrees(val_labels_path):
    records = read_labels(val_labels_path).records
    assert len(records) == 10000
    stated_counts = []
    for r in records:
        q = parse_query(r.text)
        assert q.kind == r.kind, r.text
        if r.kind == "vehicle":
            assert q.vehicle == r.vehicle, r.text
        else:
            assert q.agrees_with(r.vector), r.text
            stated_counts.append(len(q.stated))
    # gender, age, orientation are always determined
    assert min(stated_counts) >= 7


def test_implied_zeros_of_the_clothing_form():
    q = parse_query(
        "A male pedestrian who is a minor, with his body back to the camera. He is in a long sleeve shirt."
    )
    a = q.attributes
    assert a[0] == 0 and a[3] == 1 and a[1] == 0 and a[6] == 1 and a[4] == 0
    assert a[7] == a[8] == a[19] == 0  # no hat, glasses, long coat
    assert a[9] == a[10] == a[11] == a[12] == 0  # no bag clause: no bag at all
    assert a[14] == 1 and a[13] == 0 and a[15:19] == (0, 0, 0, 0) and a[20] == 0
    assert q.boots is False


def test_accessory_form_leaves_clothing_unknown_and_bag_order():
    q = parse_query(
        "A walking woman who is aged over 60, and is standing sideways and carrying a backpack. "
        "She is wearning glasses,a coat that is long,boots."
    )
    a = q.attributes
    assert a[0] == 1 and a[1] == 1 and a[5] == 1
    assert a[9] == 0 and a[10] == 0 and a[11] == 1 and a[12] is None
    assert a[7] == 0 and a[8] == 1 and a[19] == 1 and q.boots is True
    assert a[13] is None and a[14] is None and a[20] is None


def test_vehicle_queries_and_free_text():
    q = parse_query("This is a grey Balong Heavy Truck.")
    assert q.kind == "vehicle" and q.vehicle == VehicleAttributes(color="grey", brand="Balong Heavy Truck")
    q = parse_query("an orange chery sedan")
    assert q.vehicle == VehicleAttributes(color="orange", brand="Chery", type="Sedan")
    q = parse_query("woman with a red backpack and a hat")
    assert q.kind == "pedestrian" and q.attributes[0] == 1 and q.attributes[11] == 1 and q.attributes[7] == 1
    assert q.attributes[9] is None
    assert parse_query("hello world").kind is None
