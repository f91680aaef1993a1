"""One labelled crop: the unit every stage passes around (parser, generator, renderer, trainer, metric)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trafficsearch.data.vocab import BRANDS, COLORS, VEHICLE_TYPES

Kind = Literal["vehicle", "pedestrian"]
KINDS: tuple[Kind, ...] = ("vehicle", "pedestrian")

# Longest brand names first so "Balong Heavy Truck" is not read as a type "Truck".
_BRANDS_LONGEST_FIRST = sorted(BRANDS, key=len, reverse=True)


@dataclass(frozen=True)
class VehicleAttributes:
    """Parsed vehicle attribute field; any part may be missing (train/val never hold all three)."""

    color: str | None = None
    brand: str | None = None
    type: str | None = None

    def label(self) -> str:
        """The attribute field as the data writes it: '{color} {brand} {type}.' with absent parts omitted."""
        return " ".join(p for p in (self.color, self.brand, self.type) if p) + "."


def parse_vehicle_attribute(field_text: str) -> VehicleAttributes | None:
    """Parse 'white Audi.', 'SUV.', 'Balong Heavy Truck.', 'grey Chery Sedan.'; None if it is not one."""
    if not field_text.endswith("."):
        return None
    rest = field_text[:-1].strip()
    color = vtype = brand = None
    head, _, tail = rest.partition(" ")
    if head in COLORS:
        color, rest = head, tail
    for candidate in _BRANDS_LONGEST_FIRST:
        if rest == candidate or rest.startswith(candidate + " "):
            brand, rest = candidate, rest[len(candidate) :].strip()
            break
    if rest in VEHICLE_TYPES:
        vtype, rest = rest, ""
    if rest or not (brand or vtype):
        return None
    return VehicleAttributes(color=color, brand=brand, type=vtype)


@dataclass(frozen=True)
class Record:
    """A label line: image name, kind, raw attribute field, caption, and the parsed attributes.

    `vector` holds the 21 pedestrian attributes; `vehicle` the parsed vehicle field. `line` is the
    1-based line number in the source file (0 when the record was made in memory).
    """

    image: str
    kind: Kind
    attributes: str
    text: str
    vector: tuple[int, ...] | None = None
    vehicle: VehicleAttributes | None = None
    line: int = field(default=0, compare=False)

    @property
    def relevance_key(self) -> str:
        """Equal-rule identity: the vehicle label string, or the 21-value vector joined by commas."""
        if self.kind == "vehicle":
            assert self.vehicle is not None
            return "v:" + self.vehicle.label()
        assert self.vector is not None
        return "p:" + ",".join(map(str, self.vector))

    def to_line(self) -> str:
        """The competition label line `image$attributes$text`."""
        return f"{self.image}${self.attributes}${self.text}"


def is_relevant(query: Record, image: Record, rule: Literal["equal", "contain"] = "equal") -> bool:
    """Whether `image` answers `query` under the official rules (docs/competition.md).

    equal: same kind and identical annotation. contain (pedestrians only): same gender and the image has
    every attribute the query has; vehicles stay equal.
    """
    if query.kind != image.kind:
        return False
    if rule == "equal" or query.kind == "vehicle":
        return query.relevance_key == image.relevance_key
    if rule != "contain":
        raise ValueError(f"unknown relevance rule {rule!r}: expected 'equal' or 'contain'")
    q, v = query.vector, image.vector
    assert q is not None and v is not None
    return q[0] == v[0] and all(vi >= qi for qi, vi in zip(q[1:], v[1:], strict=True))
