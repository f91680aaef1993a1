"""Can a simple model read a vehicle's brand at 64 px? A nearest-centroid classifier on renders of 8 brands.

Shared by tests/test_synth_brand.py (floors) and benchmarks/brand_readability.py (this renderer vs an older
one). White sedans only, so the brand's design is all that differs between the classes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from trafficsearch.data.records import Record, VehicleAttributes
from trafficsearch.data.vocab import BRANDS

BRANDS8 = tuple(BRANDS[i] for i in range(0, 64, 8))  # spread over the vocabulary: chance = 1/8
# (record, seed, domain, vehicle_view) -> (image, body mask), as data.synth.render.render_record_with_mask
RenderFn = Callable[..., tuple[Image.Image, Image.Image | None]]


def brand_features(render: RenderFn, view: str, domain: str, n: int, first_seed: int) -> tuple:
    """Grey pixels of each render shrunk to 64 px wide, cropped to the vehicle's box (as a detector would),
    resized to 24x24; returns (features, labels)."""
    rows, labels = [], []
    for label, brand in enumerate(BRANDS8):
        for k in range(first_seed, first_seed + n):
            v = VehicleAttributes(color="white", brand=brand, type="Sedan")
            record = Record(
                image=f"{brand}-{k}.jpg", kind="vehicle", attributes=v.label(), text="", vehicle=v
            )
            img, mask = render(record, k, domain, vehicle_view=view)
            assert mask is not None
            img = img.resize((64, round(64 * img.height / img.width)))
            ys, xs = np.nonzero(np.asarray(mask.resize(img.size)))
            img = img.crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            rows.append(np.asarray(img.convert("L").resize((24, 24)), dtype=np.float32).ravel())
            labels.append(label)
    return np.array(rows), np.array(labels)


def nearest_centroid_accuracy(train: tuple, test: tuple) -> float:
    """Held-out accuracy of class centroids of standardised features (a model with nothing to tune)."""
    (x_tr, y_tr), (x_te, y_te) = train, test
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-3
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    centroids = np.stack([x_tr[y_tr == c].mean(0) for c in range(len(BRANDS8))])
    dist = ((x_te[:, None, :] - centroids[None]) ** 2).sum(-1)
    return float((dist.argmin(1) == y_te).mean())


def brand_accuracy(render: RenderFn, view: str, domain: str, test_domain: str | None = None) -> float:
    """12 training and 6 held-out seeds per brand; `test_domain` tests on another domain's renders."""
    train = brand_features(render, view, domain, 12, 0)
    return nearest_centroid_accuracy(train, brand_features(render, view, test_domain or domain, 6, 1000))
