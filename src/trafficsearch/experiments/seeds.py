"""The demo over several seeds: one run per seed (its own work folder, resumable), and their spread.

Why: at demo scale a trained model moves by a point or more between seeds, so one run's "full system minus
best single model" is not a finding. `summarise_seeds` gives, per system and split, the mean, sample
standard deviation and min-max of official mAP@10 (overall, vehicles, pedestrians; both relevance rules),
the per-seed difference of the full system to the best single model (the one the demo's comparison picks)
and to fusion alone, and each seed's wall time. benchmarks/demo_seeds.py writes it to
benchmarks/results/demo_seeds.json, which `trafficsearch demo` prints its one run beside.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from trafficsearch.experiments.demo import DemoPlan, load_results, run_demo
from trafficsearch.experiments.labels import BEST_SINGLE, FULL_SYSTEM, FUSION

KINDS = {"overall": None, "vehicle": "vehicle", "pedestrian": "pedestrian"}
RULES = ("equal", "contain")
SPLITS = ("val", "test-style")
RESULTS_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "results"  # in a source checkout


def spread_path(fast: bool = False) -> Path:
    """Where the committed seed spread of the demo's plan (or of its --fast plan) lives."""
    return RESULTS_DIR / ("demo_seeds-fast.json" if fast else "demo_seeds.json")


def seed_work(work: str | Path, seed: int) -> Path:
    return Path(work) / f"seed-{seed}"


def _plan_json(plan: DemoPlan) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(plan)))


def run_seeds(
    work: str | Path, plan: DemoPlan, seeds: Iterable[int], console: Any = None
) -> list[dict[str, Any]]:
    """Run the demo once per seed in WORK/seed-K with DemoPlan(seed=K); the results.json of each.

    A seed whose results.json was written for the same plan is read back, not run again (its wall time is
    that run's); an interrupted seed resumes its finished stages (run_demo)."""
    out = []
    for seed in seeds:
        folder, seeded = seed_work(work, seed), replace(plan, seed=seed)
        results = folder / "results.json"
        if results.is_file() and load_results(folder).get("plan") == _plan_json(seeded):
            out.append(load_results(folder))
            continue
        if console is not None:
            console.rule(f"[bold]seed {seed}")
        run_demo(folder, seeded, console)
        out.append(load_results(folder))
    return out


def seed_stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (None for one value), min, max and the values themselves."""
    values = [float(v) for v in values]
    if not values:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None, "values": []}
    return {
        "n": len(values),
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else None,
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "values": [round(v, 4) for v in values],
    }


def official_points(row: dict[str, Any] | None, kind: str | None) -> float | None:
    """Official mAP@10 of a row (overall or one kind) in points (x100)."""
    if row is None:
        return None
    scores = row["overall"] if kind is None else row.get("per_kind", {}).get(kind)
    return None if scores is None else 100.0 * scores["map_official"]


def _system_of(rows: Sequence[dict[str, Any]], split: str, prefix: str) -> str | None:
    return next((r["system"] for r in rows if r["split"] == split and r["system"].startswith(prefix)), None)


def summarise_seeds(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The spread over seeds of every system's official mAP@10 (points), see the module docstring.

    `systems[name][split][rule][kind]` holds seed_stats(); "best single model" is, per seed, the single model
    the demo's comparison picked on that split (`best_single[split]` lists them)."""
    by_seed = [{(r["split"], r["system"], r["rule"]): r for r in res["rows"]} for res in results]
    names = list(dict.fromkeys(r["system"] for res in results for r in res["rows"]))
    fusion = next((n for n in names if n.startswith(FUSION)), None)
    # the best single model sits after the members, before the systems built from them
    at = names.index(fusion) if fusion in names else len(names)
    names = [*names[:at], BEST_SINGLE, *names[at:]]
    best = {
        split: [res.get("comparison", {}).get(split, {}).get("best_single") for res in results]
        for split in SPLITS
    }
    systems: dict[str, Any] = {}
    for name in names:
        per_split: dict[str, Any] = {}
        for split in SPLITS:
            per_rule = {}
            for rule in RULES:
                per_kind = {}
                for kind, key in KINDS.items():
                    values = []
                    for i, rows in enumerate(by_seed):
                        system = best[split][i] if name == BEST_SINGLE else name
                        value = official_points(rows.get((split, system, rule)), key)
                        if value is not None:
                            values.append(value)
                    per_kind[kind] = seed_stats(values)
                per_rule[rule] = per_kind
            if any(v["n"] for per_kind in per_rule.values() for v in per_kind.values()):
                per_split[split] = per_rule
        if per_split:
            systems[name] = per_split

    def difference(split: str, a: str | None, b_of_seed: Any) -> dict[str, Any]:
        values = []
        for i, rows in enumerate(by_seed):
            x = official_points(rows.get((split, a, "equal")), None) if a else None
            y = official_points(rows.get((split, b_of_seed(i), "equal")), None)
            if x is not None and y is not None:
                values.append(x - y)
        return seed_stats(values)

    full = FULL_SYSTEM if FULL_SYSTEM in names else fusion
    return {
        "seeds": [res.get("plan", {}).get("seed") for res in results],
        "systems": systems,
        "best_single": best,
        "full_system": full,
        "full_minus_best_single": {s: difference(s, full, lambda i, s=s: best[s][i]) for s in SPLITS},
        "full_minus_fusion": (
            {s: difference(s, FULL_SYSTEM, lambda i: fusion) for s in SPLITS}
            if FULL_SYSTEM in names and fusion
            else {}
        ),
        "wall_s": [res.get("timings", {}).get("total") for res in results],
        "fit_kept": [res.get("fit", {}).get("kept") for res in results],
    }


def load_spread(path: str | Path) -> dict[str, Any] | None:
    """A written seed spread (benchmarks/demo_seeds.py), or None when there is none (or it is unreadable)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and "summary" in saved else None


def plan_differences(saved_plan: dict[str, Any], plan: DemoPlan) -> list[str]:
    """The plan fields (seed aside) where a measured spread's plan differs from `plan`."""
    mine = _plan_json(plan)
    return sorted(k for k in set(mine) | set(saved_plan) if k != "seed" and mine.get(k) != saved_plan.get(k))


def difference_lines(summary: dict[str, Any]) -> list[str]:
    """One line per split: the full system minus the best single model in points, mean ± sd (each seed's),
    and minus fusion alone (what ITM re-ranking adds)."""
    lines = []
    for split in SPLITS:
        d = summary["full_minus_best_single"].get(split, {})
        if not d.get("n"):
            continue
        sd = "" if d["std"] is None else f" ± {d['std']:.2f}"
        name = "full system" if summary["full_system"] == FULL_SYSTEM else summary["full_system"]
        line = (
            f"{split}: {name} - best single {d['mean']:+.2f}{sd} "
            f"({' '.join(f'{v:+.2f}' for v in d['values'])})"
        )
        f = summary.get("full_minus_fusion", {}).get(split, {})
        if f.get("n"):
            line += f"; ITM over fusion {f['mean']:+.2f}"
        lines.append(line)
    return lines
