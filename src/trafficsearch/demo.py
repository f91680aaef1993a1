"""The main job (`trafficsearch demo`, `make demo`): synthetic train set -> real val labels rendered ->
default model trained -> val gallery indexed -> official scores beside a random ranking.

Every stage writes files under the work folder and is skipped or resumed when its output is already there,
so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from trafficsearch.data.labels import read_labels, write_labels
from trafficsearch.data.layout import split
from trafficsearch.data.records import Record
from trafficsearch.ioutil import atomic_write_json
from trafficsearch.resources import extract_val_labels

RULES = ("equal", "contain")


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run. `val` caps the real val labels used (evenly spread); None = all 10,000."""

    config: str = "demo/default"
    train: int = 9000
    val: int | None = None
    test: int = 2000
    noise: float = 0.05
    epochs: int | None = 7
    val_per_epoch: int | None = 2500  # evenly spread val images scored after each epoch (the end uses all)
    seed: int = 0
    workers: int = 2

    @classmethod
    def fast(cls) -> DemoPlan:
        return cls(config="demo/fast", train=3000, val=1500, test=500, epochs=None, val_per_epoch=None)


@dataclass
class DemoResult:
    """What the demo measured, also written to WORK/results.json."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)


def _evenly(records: Sequence[Record], n: int | None) -> list[Record]:
    if n is None or n >= len(records):
        return list(records)
    step = len(records) / n
    return [records[int(i * step)] for i in range(n)]


def prepare_data(work: Path, plan: DemoPlan) -> Path:
    """Synthetic train (+ test-style split) and the real val labels rendered, in the competition layout."""
    from trafficsearch.data.synth.generate import generate_dataset, render_labels

    root = work / "data"
    generate_dataset(
        root, plan.train, 0, seed=plan.seed, noise_rate=plan.noise, n_test=plan.test, workers=plan.workers
    )
    val = split(root, "val")
    all_val = work / "cvpr2023_val_label.txt"
    if not all_val.is_file():
        extract_val_labels(all_val)
    records = _evenly(read_labels(all_val).records, plan.val)
    if not val.labels.is_file() or [r.image for r in read_labels(val.labels).records] != [
        r.image for r in records
    ]:
        write_labels(records, val.labels)
    render_labels(val.labels, val.images, seed=plan.seed, domain="web", workers=plan.workers)
    return root


def train_model(work: Path, root: Path, plan: DemoPlan) -> Path:
    """Train (or resume) the default model; returns the best checkpoint directory."""
    from trafficsearch.train.config import load_config
    from trafficsearch.train.loop import train

    overrides = [f"data.root={root}", f"train.output_dir={work / 'train'}", f"train.seed={plan.seed}"]
    if plan.epochs is not None:
        overrides.append(f"train.epochs={plan.epochs}")
    if plan.val_per_epoch is not None:
        overrides.append(f"data.max_val={plan.val_per_epoch}")
    cfg = load_config(plan.config, overrides)
    run_dir = work / "train"
    resume = (run_dir / "last").is_dir()
    result = train(cfg, run_dir, resume=resume)
    best = result.run_dir / "best"
    return best if best.is_dir() else result.run_dir / "last"


def rank_split(
    work: Path, root: Path, name: str, checkpoint: Path, workers: int
) -> tuple[list[Record], list]:
    """Index split `name` with the checkpoint and rank its gallery for every label text."""
    from trafficsearch.index.build import build_index
    from trafficsearch.models import load_model
    from trafficsearch.search.engine import SearchEngine

    sp = split(root, name)
    records = read_labels(sp.labels).records
    index_dir = work / f"index-{name}"
    model = load_model(checkpoint)
    build_index(sp.images, index_dir, model, model_spec=checkpoint, labels=sp.labels, workers=workers)
    engine = SearchEngine.open(index_dir, model=model)
    hits = engine.search([r.text for r in records], k=10)
    return records, hits


def score_rows(system: str, split_name: str, records: list[Record], ranked: list[list[str]]) -> list[dict]:
    from trafficsearch.eval.metrics import evaluate

    rows = []
    for rule in RULES:
        result = evaluate(records, records, ranked, rule=rule)
        row = {"split": split_name, "system": system, "rule": rule, **result.to_dict()}
        rows.append(row)
    return rows


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def print_table(console: Console, rows: list[dict]) -> None:
    table = Table(
        title="official mAP@10 and the rest x100. val: the real val labels rendered; test-style: "
        "colour+brand+type vehicle queries, camera domain",
        title_justify="left",
    )
    for col in (
        "split",
        "system",
        "rule",
        "mAP@10",
        "vehicles",
        "pedestrians",
        "mAP/min(R,10)",
        "R@1",
        "R@10",
    ):
        table.add_column(col, justify="left" if col in ("split", "system", "rule") else "right")
    for row in rows:
        per_kind = row.get("per_kind", {})
        overall = row["overall"]
        table.add_row(
            row["split"],
            row["system"],
            row["rule"],
            _fmt(overall["map_official"]),
            _fmt(per_kind.get("vehicle", {}).get("map_official")),
            _fmt(per_kind.get("pedestrian", {}).get("map_official")),
            _fmt(overall["map_at_k"]),
            _fmt(overall["recall"]["1"]),
            _fmt(overall["recall"]["10"]),
        )
    console.print(table)


def _timed(timings: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    value = fn()
    timings[name] = round(time.perf_counter() - start, 1)
    return value


def run_demo(work: str | Path, plan: DemoPlan, console: Console | None = None) -> DemoResult:
    """Run every stage (resuming finished ones) and print the comparison table."""
    from trafficsearch.data.synth.sheet import write_contact_sheet
    from trafficsearch.eval.metrics import random_ranking
    from trafficsearch.eval.report import write_html_report

    console = console or Console(width=max(Console().width, 110))
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    out = DemoResult()
    t = out.timings
    start = time.perf_counter()

    console.rule("1/4 data: synthetic train set + real val labels rendered")
    root = _timed(t, "data", lambda: prepare_data(work, plan))
    sheet = write_contact_sheet(
        split(root, "train").dir, None, work / "train_samples.png", n=24, seed=plan.seed
    )
    console.rule("2/4 training the default model")
    checkpoint = _timed(t, "train", lambda: train_model(work, root, plan))
    console.rule("3/4 indexing and searching")
    val_records, val_hits = _timed(
        t, "index+search val", lambda: rank_split(work, root, "val", checkpoint, plan.workers)
    )
    splits = [("val", val_records, val_hits)]
    if plan.test:
        test_records, test_hits = _timed(
            t, "index+search test", lambda: rank_split(work, root, "test", checkpoint, plan.workers)
        )
        splits.append(("test-style", test_records, test_hits))

    console.rule("4/4 scoring")
    ranked_by_split = {}
    for name, records, hits in splits:
        ranked = ranked_by_split[name] = [[h.name for h in row] for row in hits]
        out.rows += score_rows("default model", name, records, ranked)
        out.rows += score_rows(
            "random ranking", name, records, random_ranking(records, len(records), 10, seed=plan.seed)
        )
    write_html_report(
        work / "report.html",
        val_records,
        val_records,
        ranked_by_split["val"],
        split(root, "val").images,
        scores=[[h.score for h in row] for row in val_hits],
        title="trafficsearch demo: real val labels",
    )
    t["total"] = round(time.perf_counter() - start, 1)
    out.paths = {
        "report": str(work / "report.html"),
        "curves": str(work / "train" / "curves.png"),
        "train_samples": str(sheet),
        "checkpoint": str(checkpoint),
        "val_index": str(work / "index-val"),
        "results": str(work / "results.json"),
    }
    atomic_write_json(work / "results.json", {"plan": asdict(plan), **asdict(out)})
    print_table(console, out.rows)
    console.print("timings (s): " + ", ".join(f"{k} {v}" for k, v in t.items()))
    for key, path in out.paths.items():
        console.print(f"{key:>13}: {path}")
    return out


def load_results(work: str | Path) -> dict[str, Any]:
    return json.loads((Path(work) / "results.json").read_text())
