"""Brand readability at 64 px: this renderer vs the one before brands had designs (commit 531b7d4).

    .venv/bin/python benchmarks/brand_readability.py [--before 531b7d4]

A nearest-centroid classifier on 64 px renders of 8 brands (trafficsearch.testing.brand_readability; chance
0.125) per view and domain, for both renderers, plus render time per crop of each on the same 400 records.
The older render.py is read from git (`git show REV:...`) and loaded beside today's. Prints a table and
writes benchmarks/results/brand_readability.{json,md}.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from trafficsearch.data.synth import render as current
from trafficsearch.data.synth.grammar import sample_records
from trafficsearch.ioutil import atomic_write_json, atomic_write_text
from trafficsearch.testing.brand_readability import brand_accuracy

RESULTS = Path(__file__).parent / "results"
CASES = [("front", "web", None), ("rear", "web", None), ("side", "web", None), ("front", "camera", None),
         ("rear", "camera", None), ("side", "camera", None), ("front", "web", "camera")]  # fmt: skip


def load_renderer(rev: str):
    source = subprocess.run(
        ["git", "show", f"{rev}:src/trafficsearch/data/synth/render.py"],
        check=True, capture_output=True, text=True, cwd=Path(__file__).parent,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "render_before.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("render_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_before"] = module
    spec.loader.exec_module(module)
    return module


def ms_per_crop(module, records) -> float:
    start = time.perf_counter()
    for r in records:
        module.render_record(r, 0, "web")
        module.render_record(r, 0, "camera")
    return (time.perf_counter() - start) / (2 * len(records)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default="531b7d4")
    args = ap.parse_args()
    before = load_renderer(args.before)
    renderers = {"this": current, args.before: before}
    out: dict = {"cases": [], "ms_per_crop": {}}
    table = Table(title="nearest-centroid brand accuracy at 64 px, 8 brands (chance 0.125)")
    for col in ("view", "train domain", "test domain", "this", args.before, "ratio"):
        table.add_column(col, justify="right")
    md = [f"| view | train | test | this | {args.before} |", "|---|---|---|---|---|"]
    for view, domain, test_domain in CASES:
        acc = {
            k: brand_accuracy(m.render_record_with_mask, view, domain, test_domain)
            for k, m in renderers.items()
        }
        out["cases"].append({"view": view, "domain": domain, "test_domain": test_domain or domain, **acc})
        a, b = acc["this"], acc[args.before]
        table.add_row(view, domain, test_domain or domain, f"{a:.2f}", f"{b:.2f}", f"{a / max(b, 1e-9):.1f}")
        md.append(f"| {view} | {domain} | {test_domain or domain} | {a:.2f} | {b:.2f} |")
    vehicles = [r for r in sample_records(600, np.random.default_rng(1)) if r.kind == "vehicle"][:200]
    for _ in range(2):  # the second round counts (warm caches)
        out["ms_per_crop"] = {k: round(ms_per_crop(m, vehicles), 3) for k, m in renderers.items()}
    Console(width=100).print(table)
    times = ", ".join(f"{k} {v:.2f} ms" for k, v in out["ms_per_crop"].items())
    print(f"render time per vehicle crop (400 crops, web + camera): {times}")
    machine = f"{platform.node()} ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()})"
    out["machine"] = machine
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "brand_readability.json", out)
    atomic_write_text(
        RESULTS / "brand_readability.md",
        f"Machine: {machine}\n\n" + "\n".join(md) + f"\n\nRender time per vehicle crop: {times}\n",
    )


if __name__ == "__main__":
    main()
