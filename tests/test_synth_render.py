"""Renderer: deterministic, right shapes and sizes, and faithful to the attributes that are measurable."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from trafficsearch.data.records import Record, VehicleAttributes
from trafficsearch.data.synth.grammar import caption_for_vector, sample_records
from trafficsearch.data.synth.render import _emblem, _Painter, render_record, render_record_with_mask
from trafficsearch.data.vocab import BRANDS


def _vehicle(color: str, vtype: str = "Sedan", brand: str = "Audi", name: str = "abcdefghij.jpg") -> Record:
    v = VehicleAttributes(color=color, brand=brand, type=vtype)
    return Record(image=name, kind="vehicle", attributes=v.label(), text=f"A {v.label()}", vehicle=v)


def _pedestrian(vector: tuple[int, ...], name: str = "000001.jpg") -> Record:
    text = caption_for_vector(vector, np.random.default_rng(0))
    return Record(
        image=name, kind="pedestrian", attributes=",".join(map(str, vector)), text=text, vector=vector
    )


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def records() -> list[Record]:
    return sample_records(120, np.random.default_rng(0))


def test_same_seed_same_pixels_other_seed_differs(records):
    for r in records[::10]:
        for domain in ("web", "camera"):
            assert _png(render_record(r, 3, domain)) == _png(render_record(r, 3, domain))
        a, b = np.asarray(render_record(r, 3)), np.asarray(render_record(r, 4))
        assert a.shape != b.shape or np.abs(a.astype(int) - b).mean() > 5


def test_sizes_and_aspect_ratios_by_kind(records):
    for r in records:
        img = render_record(r, 0, "camera" if r.kind == "vehicle" else "web")
        w, h = img.size
        assert img.mode == "RGB"
        if r.kind == "pedestrian":
            assert 40 <= w <= 90 and 100 <= h <= 220 and h > 1.3 * w
        else:
            assert 100 <= w <= 240 and 70 <= h <= 150 and w > h


def _body_rgb(record: Record, seed: int, domain: str) -> np.ndarray:
    img, mask = render_record_with_mask(record, seed, domain)  # type: ignore[arg-type]
    assert mask is not None
    m = np.asarray(mask) > 0
    assert m.mean() > 0.05  # the body is a real share of the crop
    return np.asarray(img, dtype=float)[m].mean(axis=0)


@pytest.mark.parametrize("domain", ["web", "camera"])
def test_vehicle_body_colour_is_measurable(domain):
    seeds = range(6)
    rgb = {
        c: np.array([_body_rgb(_vehicle(c, name=f"car{c}{s}.jpg"), s, domain) for s in seeds])
        for c in ("red", "blue", "green", "yellow", "white", "black")
    }
    red, blue, green, yellow = rgb["red"], rgb["blue"], rgb["green"], rgb["yellow"]
    assert (red[:, 0] > red[:, 2] + 25).all() and (red[:, 0] > red[:, 1] + 25).all()
    assert (blue[:, 2] > blue[:, 0] + 25).all()
    assert (green[:, 1] > green[:, 0] + 10).all() and (green[:, 1] > green[:, 2] + 5).all()
    assert (yellow[:, 0] > yellow[:, 2] + 40).all() and (yellow[:, 1] > yellow[:, 2] + 40).all()
    white, black = rgb["white"].mean(axis=1), rgb["black"].mean(axis=1)
    assert white.min() > black.max() + 60


@pytest.mark.parametrize("view", ["side", "front"])
def test_vehicle_types_have_distinct_silhouettes(view):
    """The body's height/width ratio orders the types: sedan lowest, microbus tallest."""

    def ratio(vtype: str) -> float:
        out = []
        for s in range(8):
            record = _vehicle("white", vtype, name=f"t{vtype}{s}.jpg")
            _, mask = render_record_with_mask(record, s, "web", vehicle_view=view)
            ys, xs = np.nonzero(np.asarray(mask))
            out.append((ys.max() - ys.min()) / (xs.max() - xs.min()))
        return float(np.median(out))

    r = {t: ratio(t) for t in ("Sedan", "SUV", "Minivan", "Microbus")}
    assert r["Sedan"] < r["SUV"] < r["Minivan"] < r["Microbus"], r


def test_every_brand_has_its_own_emblem():
    seen = set()
    for brand in BRANDS:
        img = Image.new("RGB", (40, 40), (100, 100, 100))
        _emblem(_Painter(img, Image.new("L", (40, 40))), brand, 20, 20, 12)
        seen.add(img.tobytes())
    assert len(seen) == len(BRANDS)


def _ped(*on: int) -> tuple[int, ...]:
    return tuple(int(i in on) for i in range(21))


def test_pedestrian_attributes_change_the_pixels():
    base = _ped(2, 6, 14)
    for extra in (7, 8, 11, 12, 16, 19, 20):
        with_attr = tuple(1 if i == extra else x for i, x in enumerate(base))
        a = np.asarray(render_record(_pedestrian(base, "000007.jpg"), 1), dtype=int)
        b = np.asarray(render_record(_pedestrian(with_attr, "000007.jpg"), 1), dtype=int)
        assert a.shape != b.shape or np.abs(a - b).mean() > 0.5, extra


def test_camera_domain_is_greyer_and_noisier_than_web():
    sat = {}
    for domain in ("web", "camera"):
        values = []
        for s in range(20):
            img = np.asarray(render_record(_vehicle("red", name=f"d{s}.jpg"), s, domain), dtype=float)
            values.append((img.max(axis=2) - img.min(axis=2)).mean())
        sat[domain] = np.mean(values)
    assert sat["camera"] < sat["web"]
