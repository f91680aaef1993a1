"""Sample label lines with the competition's grammar and vocabulary (docs/competition.md).

Attribute frequencies follow the real val labels (`val_stats.json`, counts only), so synthetic sets
have the same class imbalance and the same repeated vectors that make the equal-relevance rule hard.
"""

from __future__ import annotations

import functools
import json
import string
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trafficsearch.data.records import Record, VehicleAttributes, parse_vehicle_attribute
from trafficsearch.data.vocab import (
    AGE_GROUP,
    AGE_PHRASES,
    BAG_ORDER,
    BAG_PHRASES,
    BOOTS_ITEM,
    BRAND_ONLY,
    BRANDS,
    COAT_ITEMS,
    COLORS,
    GLASSES_ITEM,
    HAT_ITEM,
    ORIENTATION_GROUP,
    ORIENTATION_PHRASES,
    SKIRT_PHRASES,
    SLEEVE_GROUP,
    SLEEVE_PHRASES,
    SUBJECT_TEMPLATES,
    UPPER_PATTERN_GROUP,
    UPPER_PATTERN_PHRASES,
    article_for,
)

STATS_PATH = Path(__file__).with_name("val_stats.json")
HAT, GLASSES, LONG_COAT, SKIRT = 7, 8, 19, 20

# Plausible types per brand: train/val labels never say the type of a '{color} {brand}.' car, but the
# renderer must draw one and test labels state it, so each brand gets a fixed small set.
_BUS_BRANDS = ("Golden Dragon", "KINGLONG", "Yutong")
_TRUCK_BRANDS = ("Balong Heavy Truck", "Hongyan", "Shacman", "China-Moto")
_COMMERCIAL = ("FOTON", "Isuzu", "Iveco", "JAC", "JMC", "Dongfeng", "FAW", "FORLAND", "Jinbei")
_VAN_BRANDS = ("SGMW", "Chana", "HAFEI", "Jinbei", "Shuanghuan", "Soueast", "Style")
_SUV_BRANDS = ("Jeep", "Landrover", "LEOPAARD", "GreatWall", "Porsche", "Subaru", "Mitsubishi", "Suzuki")


@functools.cache
def brand_types(brand: str) -> tuple[str, ...]:
    """The vehicle types a brand is drawn as (deterministic; first one is the most common)."""
    if brand in _BUS_BRANDS:
        return ("Bus", "Microbus")
    if brand in _TRUCK_BRANDS:
        return ("Truck",)
    if brand in _COMMERCIAL:
        return ("Truck", "Microbus", "Bus") if brand != "Jinbei" else ("Microbus", "Minivan")
    if brand in _VAN_BRANDS:
        return ("Minivan", "Microbus", "Sedan")
    if brand in _SUV_BRANDS:
        return ("SUV", "Sedan")
    return ("Sedan", "SUV", "Minivan")


@functools.cache
def _stats() -> dict:
    with open(STATS_PATH, encoding="utf-8") as handle:
        stats = json.load(handle)
    labels = list(stats["vehicle_labels"])
    counts = np.array(list(stats["vehicle_labels"].values()), dtype=float)
    vectors = [tuple(int(v) for v in key.split(",")) for key in stats["pedestrian_vectors"]]
    vcounts = np.array(list(stats["pedestrian_vectors"].values()), dtype=float)
    color_counts = np.zeros(len(COLORS))
    brand_counts = np.zeros(len(BRANDS))
    for label, n in stats["vehicle_labels"].items():
        parsed = parse_vehicle_attribute(label)
        if parsed and parsed.color and parsed.brand:
            color_counts[COLORS.index(parsed.color)] += n
            brand_counts[BRANDS.index(parsed.brand)] += n
    brand_counts += 1.0  # every brand can appear, including the rare ones missing from val
    return {
        "this_is_rate": float(stats["vehicle_this_is_rate"]),
        "boots_rate": float(stats["boots_rate"]),
        "vehicle_labels": labels,
        "vehicle_p": counts / counts.sum(),
        "vectors": vectors,
        "vector_p": vcounts / vcounts.sum(),
        "color_p": color_counts / color_counts.sum(),
        "brand_p": brand_counts / brand_counts.sum(),
    }


def val_attribute_frequencies() -> np.ndarray:
    """Frequency of each of the 21 pedestrian attributes in the real val labels."""
    s = _stats()
    return (np.array(s["vectors"], dtype=float) * s["vector_p"][:, None]).sum(axis=0)


def val_vehicle_form_rates() -> dict[str, float]:
    """Share of the attribute-field forms ('color brand', 'type', 'brand') among real val vehicles."""
    s = _stats()
    rates = {"color_brand": 0.0, "type": 0.0, "brand": 0.0}
    for label, p in zip(s["vehicle_labels"], s["vehicle_p"], strict=True):
        rates[_form(parse_vehicle_attribute(label))] += float(p)
    return rates


def _form(v: VehicleAttributes | None) -> str:
    assert v is not None
    if v.color and v.brand:
        return "color_brand"
    return "type" if v.type else "brand"


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


# ---------------------------------------------------------------------------------------------- pedestrians
def caption_for_vector(vector: Sequence[int], rng: np.random.Generator, boots: bool = False) -> str:
    """Write the caption of a 21-value vector, with a random phrase variant for every part."""
    female = bool(vector[0])
    his, he = ("her", "She") if female else ("his", "He")
    age = next(i for i in AGE_GROUP if vector[i])
    orient = next(i for i in ORIENTATION_GROUP if vector[i])
    template = _pick(rng, SUBJECT_TEMPLATES)
    text = template.format(
        gender="female" if female else "male",
        person="woman" if female else "man",
        age=_pick(rng, AGE_PHRASES[age]),
    )
    text += ORIENTATION_PHRASES[orient].format(his=his)
    bag = next((i for i in BAG_ORDER if vector[i]), None)
    if bag is not None:
        text += _pick(rng, BAG_PHRASES[bag])
    items = []
    if vector[HAT]:
        items.append(HAT_ITEM)
    if vector[GLASSES]:
        items.append(GLASSES_ITEM)
    if vector[LONG_COAT]:
        items.append(_pick(rng, COAT_ITEMS))
    if boots:
        items.append(BOOTS_ITEM)
    if items:
        second = "wearning " + ",".join(items)
    else:
        sleeve = next(i for i in SLEEVE_GROUP if vector[i])
        second = "in " + _pick(rng, SLEEVE_PHRASES[sleeve])
        pattern = next((i for i in UPPER_PATTERN_GROUP if vector[i]), None)
        if pattern is not None:
            second += _pick(rng, UPPER_PATTERN_PHRASES[pattern])
        if vector[SKIRT]:
            second += _pick(rng, SKIRT_PHRASES)
    return f"{text}. {he} is {second}."


def sample_vector(rng: np.random.Generator) -> tuple[int, ...]:
    """A 21-value vector drawn from the real val joint distribution."""
    s = _stats()
    return s["vectors"][int(rng.choice(len(s["vectors"]), p=s["vector_p"]))]


def pedestrian_name(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(1_000_000)):06d}.jpg"


def vehicle_name(rng: np.random.Generator) -> str:
    return "".join(rng.choice(list(string.ascii_lowercase), size=10)) + ".jpg"


def sample_pedestrian_record(rng: np.random.Generator, name: str | None = None) -> Record:
    """A pedestrian label line; boots (text only, not an attribute) at the real rate."""
    vector = sample_vector(rng)
    boots = bool(rng.random() < _stats()["boots_rate"])
    text = caption_for_vector(vector, rng, boots=boots)
    return Record(
        image=name or pedestrian_name(rng),
        kind="pedestrian",
        attributes=",".join(map(str, vector)),
        text=text,
        vector=tuple(vector),
    )


# ---------------------------------------------------------------------------------------------- vehicles
def vehicle_text(vehicle_attrs: VehicleAttributes, rng: np.random.Generator) -> str:
    """'This is a {attr}' or 'A {attr}' at the real ratio; 'an' only before orange."""
    label = vehicle_attrs.label()
    article = article_for(label.split(" ", 1)[0])
    if rng.random() < _stats()["this_is_rate"]:
        return f"This is {article} {label}"
    return f"{article.capitalize()} {label}"


def sample_vehicle_attributes(rng: np.random.Generator, test_style: bool = False) -> VehicleAttributes:
    """Train/val style: one of the three real forms at the real ratio. Test style: colour+brand+type."""
    s = _stats()
    if test_style:
        color = COLORS[int(rng.choice(len(COLORS), p=s["color_p"]))]
        brand = BRANDS[int(rng.choice(len(BRANDS), p=s["brand_p"]))]
        return VehicleAttributes(color=color, brand=brand, type=_pick(rng, brand_types(brand)))
    label = s["vehicle_labels"][int(rng.choice(len(s["vehicle_labels"]), p=s["vehicle_p"]))]
    parsed = parse_vehicle_attribute(label)
    assert parsed is not None
    if parsed.color and parsed.brand and rng.random() < 0.15:
        # a share of colour/brand pairs drawn from the marginals, so pairs missing from val appear too
        brand = parsed.brand
        while brand in BRAND_ONLY:
            brand = BRANDS[int(rng.choice(len(BRANDS), p=s["brand_p"]))]
        parsed = VehicleAttributes(color=COLORS[int(rng.choice(len(COLORS), p=s["color_p"]))], brand=brand)
    return parsed


def sample_vehicle_record(
    rng: np.random.Generator, name: str | None = None, test_style: bool = False
) -> Record:
    attrs = sample_vehicle_attributes(rng, test_style=test_style)
    return Record(
        image=name or vehicle_name(rng),
        kind="vehicle",
        attributes=attrs.label(),
        text=vehicle_text(attrs, rng),
        vehicle=attrs,
    )


# ---------------------------------------------------------------------------------------------- sets
def sample_records(
    n: int,
    rng: np.random.Generator,
    vehicle_fraction: float = 3413 / 10000,
    test_style: bool = False,
    used: set[str] | None = None,
    vehicle_prefix: str | None = None,
) -> list[Record]:
    """n records, vehicles first then pedestrians (as in the real files), image names unique within `used`.

    `used` (updated in place) keeps names unique across splits; `vehicle_prefix` gives test-style
    names such as 'vehicle_0000002.jpg' instead of 10 random letters.
    """
    n_vehicles = int(round(n * vehicle_fraction))
    records: list[Record] = []
    used = set() if used is None else used
    for i in range(n):
        kind_vehicle = i < n_vehicles
        while True:
            if kind_vehicle and vehicle_prefix is not None:
                name = f"{vehicle_prefix}_{i + 1:07d}.jpg"
            else:
                name = vehicle_name(rng) if kind_vehicle else pedestrian_name(rng)
            if name not in used:
                used.add(name)
                break
        if kind_vehicle:
            records.append(sample_vehicle_record(rng, name, test_style=test_style))
        else:
            records.append(sample_pedestrian_record(rng, name))
    return records


def apply_label_noise(records: Sequence[Record], rate: float, rng: np.random.Generator) -> list[Record]:
    """Labels with a share `rate` of lines given another record's attributes and caption (same kind).

    The images stay rendered from the true records: a noisy line is a wrong image-text pair, as the
    crawled/annotated real training data contains. Returned records keep the image name and order.
    """
    out = list(records)
    if rate <= 0:
        return out
    for kind in ("vehicle", "pedestrian"):
        idx = [i for i, r in enumerate(records) if r.kind == kind]
        if len(idx) < 2:
            continue
        chosen = [i for i in idx if rng.random() < rate]
        for i in chosen:
            for _ in range(20):  # find a donor whose label really differs
                donor = records[idx[int(rng.integers(len(idx)))]]
                if donor.attributes != records[i].attributes:
                    break
            else:
                continue
            true = records[i]
            out[i] = Record(
                image=true.image,
                kind=kind,
                attributes=donor.attributes,
                text=donor.text,
                vector=donor.vector,
                vehicle=donor.vehicle,
            )
    return out
