"""Prompt augmentation: extra (image, text) training pairs made from a label, never replacing the original.

Why: a caption packs several facts into one string. Extra pairs that state one fact each ("The brand of
the vehicle is Audi.", one pedestrian sentence) let the text tower learn each part on its own, which the
test queries need (every test vehicle query is colour + brand + type, a combination train never holds).

What the seed intended (docs seed-recipe.md section 2) and we do:
- Vehicles: "This is a vehicle.", then one prompt per part the attribute field has, in BLIP's order
  brand, type, colour. Parts come from the parsed attribute field (`Record.vehicle`), so
  "Balong Heavy Truck." gives a brand prompt, not a type prompt. (The seed's CLIP script hard-coded the
  attribute to "empty", so it never added these; its BLIP script glued them onto the caption instead.)
- Pedestrians: each sentence of the caption as its own pair. Sentences are split on ". " as the data is
  written, so "18-60" and the comma lists of sentence 2 stay whole.
- Each extra text is a separate pair for the same image; the original caption comes first; an extra that
  equals the original (a one-sentence caption) is not repeated.
Queries at test time are used raw: never call this on them.
"""

from __future__ import annotations

from collections.abc import Iterable

from trafficsearch.data.records import Record, VehicleAttributes, parse_vehicle_attribute

VEHICLE_PROMPT = "This is a vehicle."
BRAND_PROMPT = "The brand of the vehicle is {brand}."
TYPE_PROMPT = "The vehicle's model is {type}."
COLOR_PROMPT = "The color of the vehicle is {color}."
SENTENCE_BREAK = ". "


def vehicle_prompts(attributes: VehicleAttributes) -> list[str]:
    """The generic "This is a vehicle." plus one prompt per present part, in the order brand, type, colour."""
    prompts = [VEHICLE_PROMPT]
    if attributes.brand:
        prompts.append(BRAND_PROMPT.format(brand=attributes.brand))
    if attributes.type:
        prompts.append(TYPE_PROMPT.format(type=attributes.type))
    if attributes.color:
        prompts.append(COLOR_PROMPT.format(color=attributes.color))
    return prompts


def split_sentences(text: str) -> list[str]:
    """Split a caption on ". " into sentences that each end with "."; one sentence gives [text]."""
    parts = [p.strip() for p in text.strip().split(SENTENCE_BREAK)]
    parts = [p for p in parts if p]
    return [p if p.endswith(".") else p + "." for p in parts]


def expand_record(record: Record, *, vehicles: bool = True, pedestrians: bool = True) -> list[str]:
    """All training texts for one labelled image: the original caption first, then the extra prompts.

    `vehicles` / `pedestrians` switch the augmentation off per kind (the original is always kept).
    """
    extras: list[str] = []
    if record.kind == "vehicle" and vehicles:
        parsed = record.vehicle or parse_vehicle_attribute(record.attributes)
        if parsed is not None:
            extras = vehicle_prompts(parsed)
    elif record.kind == "pedestrian" and pedestrians:
        sentences = split_sentences(record.text)
        extras = sentences if len(sentences) > 1 else []
    texts = [record.text]
    for extra in extras:
        if extra not in texts:
            texts.append(extra)
    return texts


def expand_records(
    records: Iterable[Record], *, vehicles: bool = True, pedestrians: bool = True
) -> list[tuple[Record, str]]:
    """Flatten records into (record, text) training pairs; each record's original pair comes first."""
    return [
        (record, text)
        for record in records
        for text in expand_record(record, vehicles=vehicles, pedestrians=pedestrians)
    ]
