"""The demo's system names (as results.json rows carry them) and the short labels its tables print."""

from __future__ import annotations

FULL_SYSTEM = "full system: fusion + ITM re-rank"
FUSION = "fusion"
RANDOM = "random ranking"
BEST_SINGLE = "best single model"

SHORT = {
    "clip": "CLIP default",
    "blip": "BLIP-small ITC",
    "attributes": "attribute baseline",
    FULL_SYSTEM: "full system (+ ITM)",
    RANDOM: "random ranking",
    BEST_SINGLE: "best single model",
}


def short(system: str) -> str:
    """The label a table prints for a system (tables fit 100 columns; results.json keeps the full name)."""
    return SHORT.get(system, system)
