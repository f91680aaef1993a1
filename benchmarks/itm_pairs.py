"""Does a BLIP checkpoint's ITM head tell matching pairs from non-matching ones? On the web corpus's val split
(never trained on), each image is scored with its own caption, with a random other caption, and with its
hardest negative: the caption of another annotation that ITC ranks highest for the image (what a re-ranker
meets in a top 10). Reported: mean P(match) per kind of pair and the ROC AUC of matching against each kind
of negative (0.5: the head tells nothing).

    .venv/bin/python benchmarks/itm_pairs.py [--model package:blip-small] [--model DIR ...] [--val 1000]

The corpus is `trafficsearch synth generate --corpus web` at the pre-training's seed (val only is read).
Prints a table; writes benchmarks/results/itm_pairs.{json,md} with the machine named.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score

from trafficsearch.benchmarking import machine_info
from trafficsearch.data.labels import read_labels
from trafficsearch.data.synth.generate import generate_web_corpus
from trafficsearch.ioutil import atomic_write_json, atomic_write_text
from trafficsearch.models.factory import load_model

RESULTS = Path(__file__).parent / "results"


def pair_scores(spec: str, images: list[Path], captions: list[str], keys: list[str], seed: int) -> dict:
    """P(match) of each image with its caption, a random other-annotation caption and its ITC-hardest one."""
    model = load_model(spec)
    transform = model.image_transform()
    pixels = torch.stack([transform(Image.open(p).convert("RGB")) for p in images])
    tokens = model.itm_image_tokens(pixels)
    with torch.no_grad():
        sim = model.encode_images(pixels) @ model.encode_texts(captions).T  # [images, captions]
    key_ids = np.unique(keys, return_inverse=True)[1]
    other = torch.from_numpy(key_ids[:, None] != key_ids[None, :])  # a caption of another annotation
    rng = np.random.default_rng(seed)
    random_neg = np.array([rng.choice(np.flatnonzero(row)) for row in other.numpy()])
    hard_neg = sim.masked_fill(~other, float("-inf")).argmax(dim=1).numpy()
    scored = {}
    for name, which in (("matching", np.arange(len(images))), ("random", random_neg), ("hardest", hard_neg)):
        texts = [captions[i] for i in which]
        scored[name] = model.itm_scores_tokens(texts, tokens, probabilities=True).numpy()
    row: dict = {"model": spec, "pairs": len(images)}
    for name, values in scored.items():
        row[f"p_{name}"] = float(values.mean())
    for name in ("random", "hardest"):
        labels = np.r_[np.ones(len(images)), np.zeros(len(images))]
        row[f"auc_{name}"] = float(roc_auc_score(labels, np.r_[scored["matching"], scored[name]]))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="BLIP spec or folder (repeatable)")
    parser.add_argument("--val", type=int, default=1000, help="web val images")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (the pre-training's: 0)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/itm-pairs"))
    parser.add_argument("--out", type=Path, default=RESULTS / "itm_pairs")
    args = parser.parse_args()
    specs = args.model or ["package:blip-small"]
    console = Console()
    corpus = args.work / f"web-0-{args.val}-seed{args.seed}"
    generate_web_corpus(corpus, 0, args.val, seed=args.seed, progress=False)
    labels = read_labels(corpus / "val" / "val_label.txt")
    images = [corpus / "val" / "val_images" / r.image for r in labels.records]
    captions = [r.text for r in labels.records]
    keys = [r.attributes for r in labels.records]
    rows = []
    for spec in specs:
        with console.status(f"scoring {spec} ..."):
            rows.append(pair_scores(spec, images, captions, keys, args.seed))
    table = Table(title=f"ITM on {len(images)} web val images: P(match) and AUC against each negative")
    for column in ("model", "P matching", "P random", "P hardest", "AUC random", "AUC hardest"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["model"][-40:], f"{r['p_matching']:.3f}", f"{r['p_random']:.3f}", f"{r['p_hardest']:.3f}",
            f"{r['auc_random']:.3f}", f"{r['auc_hardest']:.3f}",
        )  # fmt: skip
    console.print(table)
    machine = machine_info()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), {"rows": rows, "val": len(images), "machine": machine})
    lines = [
        "# ITM on matching and non-matching pairs",
        "",
        f"Web corpus val split (seed {args.seed}, {len(images)} images, never trained on). Each image is"
        " scored with its own caption, a random caption of another annotation, and its hardest negative (the"
        " caption of another annotation ITC ranks highest for it). AUC: matching against that negative"
        " (0.5 = no signal).",
        "",
        f"Command: `python benchmarks/itm_pairs.py {' '.join('--model ' + s for s in specs)}`. Machine: "
        f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}.",
        "",
        "| model | P(match) matching | random | hardest | AUC random | AUC hardest |",
        "|---|---|---|---|---|---|",
        *[
            f"| {r['model']} | {r['p_matching']:.3f} | {r['p_random']:.3f} | {r['p_hardest']:.3f} | "
            f"{r['auc_random']:.3f} | {r['auc_hardest']:.3f} |"
            for r in rows
        ],
        "",
    ]
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines))


if __name__ == "__main__":
    main()
