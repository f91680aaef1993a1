"""Brands as vehicle design: every brand has its own signature, and a simple model reads it at 64 px."""

from __future__ import annotations

from dataclasses import astuple

import numpy as np
import pytest

from trafficsearch.data.records import Record, VehicleAttributes
from trafficsearch.data.synth.brand_design import GRILLES, LAMPS, TRIMS, brand_design
from trafficsearch.data.synth.render import render_record_with_mask
from trafficsearch.data.vocab import BRANDS

BRANDS8 = [BRANDS[i] for i in range(0, 64, 8)]  # spread over the vocabulary, chance = 1/8


def test_every_brand_has_a_distinct_signature():
    designs = [brand_design(b) for b in BRANDS]
    shapes = {(d.grille, d.lamp, d.trim) for d in designs}
    assert len(shapes) == len(BRANDS)  # the discrete cues alone tell all 65 brands apart
    assert len({astuple(d) for d in designs}) == len(BRANDS)
    for a, b in zip(designs, designs[1:], strict=False):  # neighbours differ in every shape
        assert a.grille != b.grille and a.lamp != b.lamp and a.trim != b.trim and a.emblem != b.emblem
    assert {d.grille for d in designs} == set(GRILLES) and {d.lamp for d in designs} == set(LAMPS)
    assert {d.trim for d in designs} == set(TRIMS)
    assert all(0.85 <= d.roof <= 1.15 and 0.3 <= d.grille_w <= 0.62 for d in designs)
    brand_design.cache_clear()
    assert [brand_design(b) for b in BRANDS] == designs  # from the name alone, not from state


def _features(view: str, domain: str, n: int, first_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey pixels of each render shrunk to 64 px wide, cropped to the vehicle's box (as a detector
    would), resized to 24x24: white sedans, so only the brand's design differs between classes."""
    rows, labels = [], []
    for label, brand in enumerate(BRANDS8):
        for k in range(first_seed, first_seed + n):
            v = VehicleAttributes(color="white", brand=brand, type="Sedan")
            record = Record(
                image=f"{brand}-{k}.jpg", kind="vehicle", attributes=v.label(), text="", vehicle=v
            )
            img, mask = render_record_with_mask(record, k, domain, vehicle_view=view)  # type: ignore[arg-type]
            assert mask is not None
            img = img.resize((64, round(64 * img.height / img.width)))
            ys, xs = np.nonzero(np.asarray(mask.resize(img.size)))
            img = img.crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            rows.append(np.asarray(img.convert("L").resize((24, 24)), dtype=np.float32).ravel())
            labels.append(label)
    return np.array(rows), np.array(labels)


def _nearest_centroid_accuracy(train: tuple, test: tuple) -> float:
    (x_tr, y_tr), (x_te, y_te) = train, test
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-3
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    centroids = np.stack([x_tr[y_tr == c].mean(0) for c in range(len(BRANDS8))])
    dist = ((x_te[:, None, :] - centroids[None]) ** 2).sum(-1)
    return float((dist.argmin(1) == y_te).mean())


# Measured with these seeds: front web 0.67, rear web 0.60, front camera 0.52, side web 0.46; the renderer
# before brand designs (emblem + small light/grille styles) scored 0.23 / 0.19 / 0.12 / 0.10 here.
@pytest.mark.parametrize(
    ("view", "domain", "floor"),
    [("front", "web", 0.5), ("rear", "web", 0.45), ("front", "camera", 0.35), ("side", "web", 0.3)],
)
def test_brand_reads_at_64px_for_a_nearest_centroid_classifier(view, domain, floor):
    acc = _nearest_centroid_accuracy(_features(view, domain, 12, 0), _features(view, domain, 6, 1000))
    assert acc >= floor, acc  # chance is 0.125


def test_brand_design_carries_over_from_web_to_camera():
    """The same signature in both domains: centroids of web renders classify camera renders."""
    acc = _nearest_centroid_accuracy(_features("front", "web", 12, 0), _features("front", "camera", 6, 1000))
    assert acc >= 0.3, acc
