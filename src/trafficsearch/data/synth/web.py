"""The "web" pre-training corpus: alt-text-like captions over the renderable attributes.

Why a second grammar: the seed pre-trained on open web pairs before fine-tuning on the competition data.
Pre-training on the competition's own sentences would leak its caption templates into the start point, so
this corpus writes the same visual facts in other words and orders ("red Audi sedan parked on a street",
"photo of a woman in a long coat with a backpack"), names every vehicle fully (colour, brand and type from
uniform marginals, so rare brands and colour/brand pairs missing from val appear), and draws half the
pedestrian vectors from independent per-attribute marginals instead of the val joint distribution (more
combinations than the competition's). Image names ("web_00000001.jpg") never collide with the competition
layout's (6 digits, 10 letters or "vehicle_...").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trafficsearch.data.records import Record, VehicleAttributes
from trafficsearch.data.synth.grammar import brand_types, sample_vector
from trafficsearch.data.vocab import BRANDS, COLORS, N_ATTRIBUTES

WEB_PREFIX = "web_"
VEHICLE_FRACTION = 0.5
INDEPENDENT_VECTOR_RATE = 0.5  # share of pedestrian vectors drawn from independent marginals
TYPE_DROP_RATE = 0.2  # alt text often leaves the type out: then the label is "colour brand." only
BOOTS_RATE = 0.08

_TYPE_WORDS = {
    "Bus": ("bus", "coach"),
    "Microbus": ("microbus", "minibus"),
    "Minivan": ("minivan", "MPV"),
    "SUV": ("SUV", "crossover"),
    "Sedan": ("sedan", "saloon car"),
    "Truck": ("truck", "lorry"),
}
_VEHICLE_FULL = (
    "{color} {brand} {type} parked on a street",
    "photo of a {color} {brand} {type}",
    "{brand} {type} in {color}",
    "a {color} {type} made by {brand}",
    "{brand} {color} {type} for sale",
    "{color} {type}, {brand}, seen in traffic",
    "used {brand} {type}, {color} paint",
)
_VEHICLE_NO_TYPE = (
    "{color} {brand} on the road",
    "photo of a {color} {brand} car",
    "{brand} car in {color}",
    "my new {brand}, {color}",
)

# pedestrian phrase banks, indexed by the 21-value vector's positions (data/vocab.py)
_PERSON = {  # (female, age index) -> nouns
    (True, 1): ("elderly woman", "old lady", "woman over 60"),
    (True, 2): ("woman", "young woman", "lady"),
    (True, 3): ("girl", "teenage girl", "young girl"),
    (False, 1): ("elderly man", "old man", "man over 60"),
    (False, 2): ("man", "young man", "guy"),
    (False, 3): ("boy", "teenage boy", "young boy"),
}
_FACING = {
    4: ("facing the camera", "seen from the front", "walking towards the camera"),
    5: ("seen from the side", "in profile", "walking past"),
    6: ("seen from behind", "walking away", "with back to the camera"),
}
_TOP = {
    13: ("short-sleeved top", "t-shirt", "short sleeve shirt"),
    14: ("long-sleeved top", "sweater", "jacket"),
}
_PATTERN = {15: "striped", 16: "logo", 17: "plaid", 18: "patchwork"}
_BAG = {
    9: ("with a handbag", "carrying a purse", "holding a handbag"),
    10: ("with a shoulder bag", "carrying a messenger bag", "a bag on the shoulder"),
    11: ("with a backpack", "wearing a rucksack", "carrying a backpack"),
    12: ("holding something in front", "carrying an object in both hands"),
}
_PED_TEMPLATES = (
    "photo of a {person} {parts}",
    "{person} {facing}, {parts}",
    "street photo: {person} {parts}, {facing}",
    "a {person} {facing} {parts}",
    "pedestrian, {person}, {parts}",
)
# independent marginals (rough shares of the real val set, flattened a little toward 0.5)
_P_FEMALE = 0.45
_AGE_P = (0.1, 0.75, 0.15)
_P_HAT, _P_GLASSES, _P_COAT, _P_SKIRT_FEMALE = 0.12, 0.15, 0.2, 0.3
_BAG_P = (0.15, 0.2, 0.2, 0.1)  # handbag, shoulder bag, backpack, objects in front (rest: none)
_PATTERN_P = (0.1, 0.1, 0.05, 0.1)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def web_vehicle_record(rng: np.random.Generator, name: str) -> Record:
    """A fully named vehicle (uniform colour and brand) with an alt-text caption."""
    color = COLORS[int(rng.integers(len(COLORS)))]
    brand = BRANDS[int(rng.integers(len(BRANDS)))]
    vtype = _pick(rng, brand_types(brand))
    if rng.random() < TYPE_DROP_RATE:
        attrs = VehicleAttributes(color=color, brand=brand)
        text = _pick(rng, _VEHICLE_NO_TYPE).format(color=color, brand=brand)
    else:
        attrs = VehicleAttributes(color=color, brand=brand, type=vtype)
        words = _pick(rng, _TYPE_WORDS[vtype])
        text = _pick(rng, _VEHICLE_FULL).format(color=color, brand=brand, type=words)
    return Record(image=name, kind="vehicle", attributes=attrs.label(), text=text, vehicle=attrs)


def independent_vector(rng: np.random.Generator) -> tuple[int, ...]:
    """A 21-value vector with every attribute drawn on its own (group rules kept: one age, one facing...)."""
    v = [0] * N_ATTRIBUTES
    female = rng.random() < _P_FEMALE
    v[0] = int(female)
    v[1 + int(rng.choice(3, p=_AGE_P))] = 1
    v[4 + int(rng.integers(3))] = 1
    v[7] = int(rng.random() < _P_HAT)
    v[8] = int(rng.random() < _P_GLASSES)
    u = rng.random()
    for i, p in zip((9, 10, 11, 12), np.cumsum(_BAG_P), strict=True):
        if u < p:
            v[i] = 1
            break
    v[13 + int(rng.integers(2))] = 1
    u = rng.random()
    for i, p in zip((15, 16, 17, 18), np.cumsum(_PATTERN_P), strict=True):
        if u < p:
            v[i] = 1
            break
    v[19] = int(rng.random() < _P_COAT)
    v[20] = int(female and rng.random() < _P_SKIRT_FEMALE)
    return tuple(v)


def web_pedestrian_caption(vector: Sequence[int], rng: np.random.Generator, boots: bool = False) -> str:
    """Alt-text for a vector: every set attribute is said once, in a shuffled order of parts."""
    female = bool(vector[0])
    age = next(i for i in (1, 2, 3) if vector[i])
    facing = _pick(rng, _FACING[next(i for i in (4, 5, 6) if vector[i])])
    sleeve = next(i for i in (13, 14) if vector[i])
    pattern = next((_PATTERN[i] for i in (15, 16, 17, 18) if vector[i]), None)
    top = _pick(rng, _TOP[sleeve])
    parts = [f"in a {pattern} {top}" if pattern else f"in a {top}"]
    if vector[19]:
        parts.append(_pick(rng, ("in a long coat", "wearing a long coat", "in an overcoat")))
    if vector[20]:
        parts.append(_pick(rng, ("in a dress", "wearing a skirt", "in a skirt")))
    wear = [w for w, on in (("a hat", vector[7]), ("glasses", vector[8]), ("boots", boots)) if on]
    if wear:
        parts.append("wearing " + " and ".join(wear))
    bag = next((i for i in (9, 10, 11, 12) if vector[i]), None)
    if bag is not None:
        parts.append(_pick(rng, _BAG[bag]))
    order = rng.permutation(len(parts))
    joined = " ".join(parts[i] for i in order) if len(parts) < 3 else ", ".join(parts[i] for i in order)
    template = _pick(rng, _PED_TEMPLATES)
    return template.format(person=_pick(rng, _PERSON[(female, age)]), facing=facing, parts=joined)


def web_pedestrian_record(rng: np.random.Generator, name: str) -> Record:
    vector = independent_vector(rng) if rng.random() < INDEPENDENT_VECTOR_RATE else sample_vector(rng)
    boots = bool(rng.random() < BOOTS_RATE)
    return Record(
        image=name,
        kind="pedestrian",
        attributes=",".join(map(str, vector)),
        text=web_pedestrian_caption(vector, rng, boots=boots),
        vector=tuple(vector),
    )


def sample_web_records(n: int, rng: np.random.Generator, start: int = 0) -> list[Record]:
    """n web records, vehicles first, named web_{start+1:08d}.jpg upward (unique across calls by `start`)."""
    n_vehicles = int(round(n * VEHICLE_FRACTION))
    out = []
    for i in range(n):
        name = f"{WEB_PREFIX}{start + i + 1:08d}.jpg"
        out.append(web_vehicle_record(rng, name) if i < n_vehicles else web_pedestrian_record(rng, name))
    return out
