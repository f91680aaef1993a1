"""The demo's systems over several seeds: mean and spread of every system, and of full system - best single.

    .venv/bin/python benchmarks/demo_seeds.py --seeds 0 1 2              # the demo's plan (~10 min a seed)
    .venv/bin/python benchmarks/demo_seeds.py --seeds 0 1 2 --fast       # the --fast plan
    .venv/bin/python benchmarks/demo_seeds.py --seeds 0 1 --tiny         # smoke run; numbers mean nothing

Each seed is the whole demo with DemoPlan(seed=K) (its own data, dev split and training) in WORK/seed-K:
an interrupted seed resumes, a finished one (results.json of the same plan) is read back. Writes
benchmarks/results/demo_seeds.{json,md} (--fast: demo_seeds-fast.*; --tiny: under WORK only) with the
machine named: per system and split, official mAP@10 (overall / vehicles / pedestrians, both rules) as
mean, sample sd and min-max over the seeds; full system - best single model per seed (the single model the
demo's comparison picks), ITM re-rank over fusion, whether the fitted fusion weights were kept, and each
seed's wall time (of its last run: a resumed seed counts only what it redid). `trafficsearch demo` prints
its run beside demo_seeds.json.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from trafficsearch.benchmarking import machine_info
from trafficsearch.experiments import (
    DemoPlan,
    demo_console,
    difference_lines,
    run_seeds,
    spread_path,
    spread_table,
    summarise_seeds,
)
from trafficsearch.experiments.labels import short
from trafficsearch.ioutil import atomic_write_json, atomic_write_text

KIND_HEADERS = {"overall": "mAP@10", "vehicle": "vehicles", "pedestrian": "pedestrians"}


def _cell(stats: dict[str, Any]) -> str:
    if not stats.get("n"):
        return "-"
    sd = "" if stats["std"] is None else f" ± {stats['std']:.2f}"
    return f"{stats['mean']:.2f}{sd} ({stats['min']:.2f}-{stats['max']:.2f})"


def markdown(summary: dict[str, Any], title: str, machine: dict[str, Any]) -> str:
    """Per split: a table of systems x official mAP@10 (equal: overall, vehicles, pedestrians; contain)."""
    seeds = summary["seeds"]
    lines = [f"# {title}", "", f"Seeds {', '.join(map(str, seeds))} on {machine.get('cpu')} "
             f"({machine.get('cores')} cores). Official mAP@10 x100: mean ± sample sd (min-max) over the "
             "seeds.", ""]  # fmt: skip
    for split in ("val", "test-style"):
        headers = [*(f"{h} (equal)" for h in KIND_HEADERS.values()), "mAP@10 (contain)"]
        lines += [f"**{split}**", "", "| system | " + " | ".join(headers) + " |", "|---" * 5 + "|"]
        for system, per_split in summary["systems"].items():
            if split not in per_split:
                continue
            cells = [_cell(per_split[split]["equal"][k]) for k in KIND_HEADERS]
            cells.append(_cell(per_split[split]["contain"]["overall"]))
            lines.append(f"| {short(system)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["**Full system - best single model** (points, equal rule)", ""]
    lines += [f"- {line}" for line in difference_lines(summary)]
    best = "; ".join(
        f"{s}: {', '.join(str(b) for b in names)}" for s, names in summary["best_single"].items()
    )
    lines += [
        "",
        f"Best single model per seed: {best}. Fitted fusion weights kept per seed: {summary['fit_kept']}. "
        f"Wall time per seed (s, last run): {summary['wall_s']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("runs/demo-seeds"))
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--fast", action="store_true", help="the demo's --fast plan")
    size.add_argument("--tiny", action="store_true", help="test-sized smoke run (results under WORK)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    plan = DemoPlan.tiny() if args.tiny else DemoPlan.fast() if args.fast else DemoPlan()
    plan = replace(plan, workers=args.workers)
    mode = "tiny" if args.tiny else "fast" if args.fast else "demo"
    work = args.work / mode if mode != "demo" else args.work
    console = demo_console()
    start = time.perf_counter()
    results = run_seeds(work, plan, args.seeds, console)
    summary = summarise_seeds(results)
    machine = machine_info()
    out = work / "demo_seeds.json" if args.tiny else spread_path(args.fast)
    record = {
        "mode": mode,
        "command": "benchmarks/demo_seeds.py " + " ".join(argv if argv is not None else _argv()),
        "plan": asdict(replace(plan, seed=args.seeds[0])),
        "machine": machine,
        "total_s": round(time.perf_counter() - start, 1),
        "summary": summary,
        "per_seed": [
            {
                "seed": r["plan"]["seed"],
                "comparison": r["comparison"],
                "fit": r["fit"],
                "timings": r["timings"],
            }
            for r in results
        ],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, record)
    title = f"The demo over {len(args.seeds)} seeds ({mode} plan)"
    atomic_write_text(out.with_suffix(".md"), markdown(summary, title, machine))
    console.rule(title)
    console.print(spread_table(summary))
    for line in difference_lines(summary):
        console.print(line)
    console.print(f"wrote {out} and {out.with_suffix('.md')}")


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


if __name__ == "__main__":
    main()
