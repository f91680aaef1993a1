"""Read a query text back into attribute constraints: kind routing and an attribute baseline.

Competition captions are a lossy rendering of the label (docs/competition.md), so each of the 21
pedestrian attributes comes back as 1 (stated), 0 (stated or implied absent) or None (unknown): e.g.
the clothing form of sentence 2 implies no hat, glasses or long coat but says nothing about bags beyond
the first one written. Free-form user text is parsed leniently by keywords.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from trafficsearch.data.records import Kind, VehicleAttributes
from trafficsearch.data.vocab import (
    AGE_GROUP,
    AGE_PHRASES,
    BAG_ORDER,
    BAG_PHRASES,
    BRANDS,
    COAT_ITEMS,
    COLORS,
    N_ATTRIBUTES,
    ORIENTATION_GROUP,
    ORIENTATION_PHRASES,
    SKIRT_PHRASES,
    SLEEVE_GROUP,
    SLEEVE_PHRASES,
    UPPER_PATTERN_GROUP,
    UPPER_PATTERN_PHRASES,
    VEHICLE_TYPES,
)

HAT, GLASSES, LONG_COAT, SKIRT = 7, 8, 19, 20
_PED_WORDS = re.compile(
    r"\b(pedestrian|person|people|man|woman|men|women|male|female|he|she|his|her|boy|girl|child|"
    r"kid|lady|gentleman|walking|wearing|wearning)\b"
)
_MALE = re.compile(r"\b(male|man|men|he|his|him|boy|gentleman)\b")
_FEMALE = re.compile(r"\b(female|woman|women|she|her|girl|lady)\b")
_BRANDS_LONGEST_FIRST = sorted(BRANDS, key=len, reverse=True)


@dataclass(frozen=True)
class ParsedQuery:
    """What a query says. `attributes[i]` is 1, 0 or None (unknown) for pedestrian attribute i."""

    text: str
    kind: Kind | None
    vehicle: VehicleAttributes | None = None
    attributes: tuple[int | None, ...] = field(default=(None,) * N_ATTRIBUTES)
    boots: bool | None = None

    @property
    def stated(self) -> dict[int, int]:
        """Attribute index -> value for every attribute the text determines."""
        return {i: v for i, v in enumerate(self.attributes) if v is not None}

    def agrees_with(self, vector: tuple[int, ...]) -> bool:
        """Whether a 21-value vector is consistent with every attribute the text determines."""
        return all(vector[i] == v for i, v in self.stated.items())


def _find_phrase(text: str, phrases: dict[int, tuple[str, ...]] | dict[int, str]) -> int | None:
    for idx, options in phrases.items():
        for phrase in (options,) if isinstance(options, str) else options:
            if phrase.format(his="his") in text or phrase.format(his="her") in text:
                return idx
    return None


def _one_of(values: list[int | None], group: tuple[int, ...], chosen: int | None) -> None:
    if chosen is not None:
        for i in group:
            values[i] = int(i == chosen)


def _parse_vehicle(text: str) -> VehicleAttributes | None:
    words = re.sub(r"[.,!?]", " ", text)
    lower = f" {words.lower()} "
    color = next((c for c in COLORS if f" {c} " in lower or (c == "grey" and " gray " in lower)), None)
    brand = next((b for b in _BRANDS_LONGEST_FIRST if f" {b.lower()} " in lower), None)
    rest = lower.replace(f" {brand.lower()} ", " ") if brand else lower
    vtype = next((t for t in VEHICLE_TYPES if f" {t.lower()} " in rest), None)
    if vtype is None:
        alias = {" car ": None, " van ": "Minivan", " lorry ": "Truck", " jeep ": None}
        vtype = next((t for a, t in alias.items() if t and a in rest), None)
    if not (color or brand or vtype):
        return None
    return VehicleAttributes(color=color, brand=brand, type=vtype)


def _parse_pedestrian(text: str) -> tuple[tuple[int | None, ...], bool | None]:
    values: list[int | None] = [None] * N_ATTRIBUTES
    lower = text.lower()
    if _FEMALE.search(lower):
        values[0] = 1
    elif _MALE.search(lower):
        values[0] = 0
    _one_of(values, AGE_GROUP, _find_phrase(text, AGE_PHRASES))
    _one_of(values, ORIENTATION_GROUP, _find_phrase(text, ORIENTATION_PHRASES))
    first, _, second = text.partition(". ")
    is_caption = bool(second) and (" is in " in second or " is wearning " in second)
    bag = _find_phrase(first, BAG_PHRASES)
    if bag is not None:
        for i in BAG_ORDER[: BAG_ORDER.index(bag)]:
            values[i] = 0  # bags earlier in the order would have been written instead
        values[bag] = 1
    elif is_caption:
        for i in BAG_ORDER:
            values[i] = 0
    boots: bool | None = None
    if is_caption and " is wearning " in second:
        items = second.split(" is wearning ", 1)[1].rstrip(".").split(",")
        values[HAT] = int("a hat" in items)
        values[GLASSES] = int("glasses" in items)
        values[LONG_COAT] = int(any(c in items for c in COAT_ITEMS))
        boots = "boots" in items
    elif is_caption:
        values[HAT] = values[GLASSES] = values[LONG_COAT] = 0
        boots = False
        _one_of(values, SLEEVE_GROUP, _find_phrase(second, SLEEVE_PHRASES))
        pattern = _find_phrase(second, UPPER_PATTERN_PHRASES)
        for i in UPPER_PATTERN_GROUP:
            values[i] = int(i == pattern)
        values[SKIRT] = int(any(p in second for p in SKIRT_PHRASES))
    else:  # free text: keywords state presence only
        keywords = {
            HAT: r"\b(hat|cap)\b",
            GLASSES: r"\b(glasses|sunglasses)\b",
            LONG_COAT: r"\b(longcoat|long coat)\b",
            9: r"\bhandbag\b",
            10: r"\bshoulder ?bag\b",
            11: r"\bbackpack\b",
            12: r"\bholds? objects\b",
            13: r"\bshort sleeves?\b",
            14: r"\blong sleeves?\b",
            15: r"\bstripe",
            16: r"\blogo\b",
            17: r"\bplaid\b",
            18: r"\bsplice\b",
            SKIRT: r"\b(skirt|dress)\b",
        }
        for i, pattern_re in keywords.items():
            if re.search(pattern_re, lower):
                values[i] = 1
        if re.search(r"\bboots\b", lower):
            boots = True
    return tuple(values), boots


def parse_query(text: str) -> ParsedQuery:
    """Parse a caption or free query: its kind and the vehicle or pedestrian attributes it determines."""
    clean = " ".join(text.split())
    if _PED_WORDS.search(clean.lower()):
        attributes, boots = _parse_pedestrian(clean)
        return ParsedQuery(text=text, kind="pedestrian", attributes=attributes, boots=boots)
    vehicle = _parse_vehicle(clean)
    if vehicle is not None:
        return ParsedQuery(text=text, kind="vehicle", vehicle=vehicle)
    return ParsedQuery(text=text, kind=None)
