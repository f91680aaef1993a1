"""Rebuild `val_stats.json` from the real val labels (run once; the JSON is committed).

    python -m trafficsearch.data.synth._build_stats /work/shared/data/cvpr2023-track2-val/val_label.txt

Only counts are stored (vehicle label strings, pedestrian vectors, text-form ratios), so the generator
draws attributes with the real joint frequencies without shipping any of the real captions.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from trafficsearch.data.labels import read_labels
from trafficsearch.ioutil import atomic_write_json

STATS_PATH = Path(__file__).with_name("val_stats.json")


def build(labels_path: str | Path) -> dict:
    records = read_labels(labels_path).records
    vehicles = [r for r in records if r.kind == "vehicle"]
    pedestrians = [r for r in records if r.kind == "pedestrian"]
    vehicle_labels = Counter(r.attributes for r in vehicles)
    this_is = sum(r.text.startswith("This is ") for r in vehicles)
    vectors = Counter(",".join(map(str, r.vector or ())) for r in pedestrians)
    boots = sum("boots" in r.text for r in pedestrians)
    return {
        "source": "cvpr2023-track2 val_label.txt (counts only)",
        "n_vehicles": len(vehicles),
        "n_pedestrians": len(pedestrians),
        "vehicle_this_is_rate": round(this_is / max(len(vehicles), 1), 4),
        "boots_rate": round(boots / max(len(pedestrians), 1), 4),
        "vehicle_labels": dict(sorted(vehicle_labels.items())),
        "pedestrian_vectors": dict(sorted(vectors.items())),
    }


if __name__ == "__main__":
    atomic_write_json(STATS_PATH, build(sys.argv[1]), indent=0)
    print(f"wrote {STATS_PATH}")
