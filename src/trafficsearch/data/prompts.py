"""Prompt augmentation: extra (image, text) training pairs made from a label, never replacing the original.

Why: a caption packs several facts into one string. Extra pairs that state one fact each ("The brand of
the vehicle is Audi.", one pedestrian sentence) let the text tower learn each part on its own, which the
test queries need (every test vehicle query is colour + brand + type, a combination train never holds).

What the seed states (its write-up and BLIP/scripts/vehicle_prompt.py; docs seed-recipe.md section 2) and
we do by default, `vehicle_form="in_place"`:
- Vehicles: ONE text per image, the original caption with "This is a vehicle." and one prompt per part
  the attribute field has, in BLIP's order brand, type, colour, appended in place. Parts come from the
  parsed attribute field (`Record.vehicle`), so "Balong Heavy Truck." gives a brand prompt, not a type
  prompt. The seed glued the prompts on with no space ("...Audi.This is a vehicle."); we join with a
  space, which is what its tokenizers see after splitting on punctuation anyway. (The seed's CLIP script
  hard-coded the attribute to "empty", so it never added vehicle prompts at all.)
- `vehicle_form="pairs"`: one extra pair per part (brand, type, colour prompt), our earlier variant. The
  generic "This is a vehicle." is never a pair of its own: the same text for every vehicle made ~10% of
  all pairs identical texts, negatives of each other under one-to-one targets.
- Pedestrians: each sentence of the caption as its own pair. Sentences are split on ". " as the data is
  written, so "18-60" and the comma lists of sentence 2 stay whole.
- Each extra text is a separate pair for the same image; the original caption (or, in place, the
  augmented caption) comes first; an extra that equals the original (a one-sentence caption) is not
  repeated.
Queries at test time are used raw: never call this on them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from trafficsearch.data.records import Record, VehicleAttributes, parse_vehicle_attribute

VEHICLE_PROMPT = "This is a vehicle."
BRAND_PROMPT = "The brand of the vehicle is {brand}."
TYPE_PROMPT = "The vehicle's model is {type}."
COLOR_PROMPT = "The color of the vehicle is {color}."
SENTENCE_BREAK = ". "
VehicleForm = Literal["in_place", "pairs"]
VEHICLE_FORMS: tuple[str, ...] = ("in_place", "pairs")


def vehicle_prompts(attributes: VehicleAttributes) -> list[str]:
    """One prompt per present part, in the seed's order brand, type, colour."""
    prompts: list[str] = []
    if attributes.brand:
        prompts.append(BRAND_PROMPT.format(brand=attributes.brand))
    if attributes.type:
        prompts.append(TYPE_PROMPT.format(type=attributes.type))
    if attributes.color:
        prompts.append(COLOR_PROMPT.format(color=attributes.color))
    return prompts


def vehicle_caption_in_place(text: str, attributes: VehicleAttributes) -> str:
    """The caption, then "This is a vehicle." and the part prompts: the seed's one text per vehicle."""
    return " ".join([text.strip(), VEHICLE_PROMPT, *vehicle_prompts(attributes)])


def split_sentences(text: str) -> list[str]:
    """Split a caption on ". " into sentences that each end with "."; one sentence gives [text]."""
    parts = [p.strip() for p in text.strip().split(SENTENCE_BREAK)]
    parts = [p for p in parts if p]
    return [p if p.endswith(".") else p + "." for p in parts]


def expand_record(
    record: Record, *, vehicles: bool = True, pedestrians: bool = True, vehicle_form: VehicleForm = "in_place"
) -> list[str]:
    """All training texts for one labelled image: the (augmented) caption first, then the extra prompts.

    `vehicles` / `pedestrians` switch the augmentation off per kind (the original is then kept as it is);
    `vehicle_form` picks the seed's in-place caption or one extra pair per part.
    """
    if vehicle_form not in VEHICLE_FORMS:
        raise ValueError(f"vehicle_form {vehicle_form!r} is not one of {', '.join(VEHICLE_FORMS)}")
    first = record.text
    extras: list[str] = []
    if record.kind == "vehicle" and vehicles:
        parsed = record.vehicle or parse_vehicle_attribute(record.attributes)
        if parsed is not None and vehicle_form == "in_place":
            first = vehicle_caption_in_place(record.text, parsed)
        elif parsed is not None:
            extras = vehicle_prompts(parsed)
    elif record.kind == "pedestrian" and pedestrians:
        sentences = split_sentences(record.text)
        extras = sentences if len(sentences) > 1 else []
    texts = [first]
    for extra in extras:
        if extra not in texts:
            texts.append(extra)
    return texts


def expand_records(
    records: Iterable[Record],
    *,
    vehicles: bool = True,
    pedestrians: bool = True,
    vehicle_form: VehicleForm = "in_place",
) -> list[tuple[Record, str]]:
    """Flatten records into (record, text) training pairs; each record's own caption pair comes first."""
    return [
        (record, text)
        for record in records
        for text in expand_record(
            record, vehicles=vehicles, pedestrians=pedestrians, vehicle_form=vehicle_form
        )
    ]
