"""Each vehicle brand's fixed design signature: the large-scale cues that make a brand readable at 64 px.

On real traffic crops the brand is told apart by the car's design (grille, lamps, proportions, trim), not
by reading the emblem; a brand that is only an emblem a few pixels wide cannot be learnt at the demo's input
resolution, which inverts the real task (vehicles harder than pedestrians). So every brand gets, from its
index alone, a combination of discrete cues that is unique among the 65 brands (Chinese-remainder coding:
grille shape mod 7, lamp shape mod 5, trim mod 3, emblem shape mod 8, so any two brands with index below 105
differ in at least one shape, and neighbours in all of them) plus continuous proportions from a hash of the
name. Trim is neutral (black or chrome): it never changes what the body colour reads as.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from trafficsearch.data.vocab import BRANDS

GRILLES = ("bar", "kidney", "trapezoid", "shield", "slot", "mesh", "split")
LAMPS = ("rect", "round", "swept", "strip", "twin")
TRIMS = ("plain", "black-roof", "chrome-belt")
EMBLEMS = ("disc", "oval", "triangle", "diamond", "square", "hexagon", "wing", "ring")


@dataclass(frozen=True)
class BrandDesign:
    """Fractions are of the vehicle's width (front/rear) or length (side); scales multiply type defaults."""

    grille: str
    lamp: str
    trim: str
    emblem: str
    roof: float  # cabin / glasshouse height scale
    nose: float  # bonnet length shift in the side view (+ = longer bonnet)
    tail: float  # boot length shift in the side view (+ = longer boot)
    grille_w: float  # grille width, fraction of the vehicle's width
    grille_h: float  # grille height scale
    lamp_w: float  # one lamp's width, fraction of the vehicle's width
    lamp_h: float  # lamp height scale
    lamp_y: float  # lamp height offset (- = higher), fraction of the vehicle's height
    rim: int  # wheel rim style: 0 silver disc, 1 dark, 2 spoked, 3 chrome ring


def _unit(name: str, field: str) -> float:
    """A deterministic number in [0, 1) for (brand, field): stable across Python runs and machines."""
    digest = hashlib.blake2b(f"{name}|{field}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


@functools.cache
def brand_design(brand: str) -> BrandDesign:
    """The signature of one brand (the same for every view, domain and image)."""
    b = BRANDS.index(brand)

    def span(field: str, lo: float, hi: float) -> float:
        return lo + (hi - lo) * _unit(brand, field)

    return BrandDesign(
        grille=GRILLES[b % 7],
        lamp=LAMPS[b % 5],
        trim=TRIMS[b % 3],
        emblem=EMBLEMS[b % 8],
        roof=span("roof", 0.85, 1.15),
        nose=span("nose", -0.07, 0.07),
        tail=span("tail", -0.07, 0.07),
        grille_w=span("grille_w", 0.3, 0.62),
        grille_h=span("grille_h", 0.7, 1.5),
        lamp_w=span("lamp_w", 0.12, 0.24),
        lamp_h=span("lamp_h", 0.7, 1.5),
        lamp_y=span("lamp_y", -0.03, 0.03),
        rim=b % 4,
    )
