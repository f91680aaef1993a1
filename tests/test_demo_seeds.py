"""The demo over seeds and its printed tables: the spread statistics (numpy as the oracle), per-seed work
folders that resume, `trafficsearch demo` beside a measured spread (or saying there is none) and
`--seeds N`, and every printed table inside a 100-column terminal without wrapping a cell."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from trafficsearch.experiments import DemoPlan, contain_table, results_table, spread_table, summarise_seeds
from trafficsearch.experiments import seeds as seeds_module
from trafficsearch.experiments.labels import BEST_SINGLE, FULL_SYSTEM, short

MEMBERS = ("clip", "blip", "attributes")
SYSTEMS = (*MEMBERS, "fusion (zscore)", FULL_SYSTEM, "random ranking")


def _row(split: str, system: str, rule: str, x: float) -> dict[str, Any]:
    scores = {"map_official": x, "map_at_k": x / 3, "recall": {"1": x / 2, "5": x, "10": min(1.0, 2 * x)}}
    return {
        "split": split,
        "system": system,
        "rule": rule,
        "overall": scores,
        "per_kind": {"vehicle": {"map_official": 0.8 * x}, "pedestrian": {"map_official": 1.1 * x}},
        "latency_ms": {"p50": 12.5, "mean": 13.0},
    }


def _result(seed: int, values: dict[str, float], best: str = "clip") -> dict[str, Any]:
    """A results.json of one seed: each system's official mAP@10 (both splits; contain = equal + 0.05)."""
    rows = []
    for split in ("val", "test-style"):
        for system, x in values.items():
            x = x if split == "val" else x / 2
            rows += [_row(split, system, "equal", x), _row(split, system, "contain", x + 0.05)]
    comparison = {split: {"best_single": best, "system": FULL_SYSTEM} for split in ("val", "test-style")}
    return {
        "plan": {"seed": seed},
        "rows": rows,
        "comparison": comparison,
        "timings": {"total": 100.0 + seed},
        "fit": {"kept": seed == 1},
    }


# val official mAP@10 per seed, in SYSTEMS order; the best single model is clip, then blip, then clip
VALUES = [
    dict(zip(SYSTEMS, values, strict=True))
    for values in (
        (0.20, 0.10, 0.05, 0.22, 0.25, 0.01),
        (0.15, 0.18, 0.06, 0.21, 0.20, 0.01),
        (0.22, 0.12, 0.04, 0.23, 0.26, 0.02),
    )
]
BEST = ["clip", "blip", "clip"]


@pytest.fixture()
def results() -> list[dict[str, Any]]:
    return [_result(seed, v, b) for seed, (v, b) in enumerate(zip(VALUES, BEST, strict=True))]


def test_spread_over_seeds_matches_numpy(results: list[dict[str, Any]]) -> None:
    summary = summarise_seeds(results)
    assert summary["seeds"] == [0, 1, 2] and summary["wall_s"] == [100.0, 101.0, 102.0]
    assert summary["fit_kept"] == [False, True, False]
    assert list(summary["systems"]) == [*MEMBERS, BEST_SINGLE, *SYSTEMS[3:]]
    for system in SYSTEMS:
        for split, scale in (("val", 1.0), ("test-style", 0.5)):
            want = 100 * scale * np.array([v[system] for v in VALUES])
            for kind, factor in (("overall", 1.0), ("vehicle", 0.8), ("pedestrian", 1.1)):
                got = summary["systems"][system][split]["equal"][kind]
                assert got["mean"] == pytest.approx(np.mean(want * factor), abs=1e-3)
                assert got["std"] == pytest.approx(np.std(want * factor, ddof=1), abs=1e-3)
                assert (got["min"], got["max"]) == pytest.approx((min(want * factor), max(want * factor)))
            contain = summary["systems"][system][split]["contain"]["overall"]
            assert contain["mean"] == pytest.approx(np.mean(want + 5.0), abs=1e-3)
    # the best single model is, per seed, the one the comparison picked (here clip, blip, clip)
    best = np.array([100 * v[b] for v, b in zip(VALUES, BEST, strict=True)])
    assert summary["best_single"]["val"] == BEST
    assert summary["systems"][BEST_SINGLE]["val"]["equal"]["overall"]["values"] == pytest.approx(best)
    full = np.array([100 * v[FULL_SYSTEM] for v in VALUES])
    diff = summary["full_minus_best_single"]["val"]
    assert diff["values"] == pytest.approx(full - best)
    assert diff["std"] == pytest.approx(np.std(full - best, ddof=1), abs=1e-3)
    fusion = np.array([100 * v["fusion (zscore)"] for v in VALUES])
    assert summary["full_minus_fusion"]["val"]["mean"] == pytest.approx(np.mean(full - fusion), abs=1e-3)
    one = summarise_seeds(results[:1])["systems"]["clip"]["val"]["equal"]["overall"]
    assert one["std"] is None and one["mean"] == one["min"] == one["max"] == pytest.approx(20.0)


def _render(table: Any, width: int) -> list[str]:
    console = Console(width=width, record=True)
    console.print(table)
    return console.export_text().splitlines()


def test_every_printed_table_fits_100_columns_without_wrapping(results: list[dict[str, Any]]) -> None:
    summary = summarise_seeds(results)
    for table in (
        results_table(results[0]["rows"]),
        contain_table(results[0]["rows"]),
        spread_table(summary),
        spread_table(summary, results[1]),
    ):
        natural = _render(table, 300)  # as wide as it wants to be: within 100 columns
        assert max(len(line) for line in natural) <= 100
        lines = _render(table, 100)
        assert max(len(line) for line in lines) <= 100
        body = [line for line in lines if any(line.startswith(short(s)) for s in (*SYSTEMS, BEST_SINGLE))]
        assert len(body) == len(table.rows)  # one line per system: no cell wrapped or cut
    lines = _render(results_table(results[0]["rows"]), 100)
    clip = next(line for line in lines if line.startswith("CLIP default"))
    assert clip.split()[2:9] == ["20.00", "16.00", "22.00", "10.00", "8.00", "11.00", "12.5"]
    beside = next(line for line in _render(spread_table(summary, results[1]), 100) if line.startswith("best"))
    # this run's best single model (seed 1: blip, 18.00) beside the three seeds' mean ± sd and range
    assert beside.split()[3:8] == ["18.00", "20.00", "±", "2.00", "18.00-22.00"]


def _fake_run_demo(calls: list[tuple[Path, int]]) -> Any:
    def run(work: Path, plan: DemoPlan, console: Any = None) -> None:
        calls.append((Path(work), plan.seed))
        result = _result(plan.seed, VALUES[plan.seed % 3], BEST[plan.seed % 3])
        Path(work).mkdir(parents=True, exist_ok=True)
        (Path(work) / "results.json").write_text(json.dumps({**result, "plan": asdict(plan)}))

    return run


def test_each_seed_runs_in_its_own_folder_and_a_finished_one_is_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Path, int]] = []
    monkeypatch.setattr(seeds_module, "run_demo", _fake_run_demo(calls))
    plan = DemoPlan(train=10)
    got = seeds_module.run_seeds(tmp_path, plan, [0, 2])
    assert calls == [(tmp_path / "seed-0", 0), (tmp_path / "seed-2", 2)]
    assert [r["plan"]["seed"] for r in got] == [0, 2]
    again = seeds_module.run_seeds(tmp_path, plan, [0, 2, 1])
    assert calls[2:] == [(tmp_path / "seed-1", 1)]  # 0 and 2 were done: read back
    assert [r["plan"]["seed"] for r in again] == [0, 2, 1]
    seeds_module.run_seeds(tmp_path, replace(plan, train=20), [0])  # another plan: run again
    assert calls[3:] == [(tmp_path / "seed-0", 0)]


def _cli(args: list[str]) -> Any:
    import typer
    from typer.testing import CliRunner

    from trafficsearch.cli import demo_commands

    app = typer.Typer()
    demo_commands.register(app)
    app.command("noop")(lambda: None)
    return CliRunner().invoke(app, ["demo", *args], env={"COLUMNS": "100"})


def test_demo_prints_its_run_beside_the_measured_spread_or_says_there_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, results: list[dict[str, Any]]
) -> None:
    import trafficsearch.experiments as experiments

    calls: list[tuple[Path, int]] = []
    monkeypatch.setattr(experiments, "run_demo", _fake_run_demo(calls))
    missing = tmp_path / "nothing.json"
    out = _cli(["--work", str(tmp_path / "w"), "--spread", str(missing)])
    assert out.exit_code == 0, out.output
    assert "no seed spread measured yet" in out.output and str(missing) in " ".join(out.output.split())
    spread = tmp_path / "spread.json"
    saved_plan = asdict(replace(DemoPlan(), train=123))
    saved = {"summary": summarise_seeds(results), "plan": saved_plan, "machine": {"cpu": "X1"}}
    spread.write_text(json.dumps(saved))
    out = _cli(["--work", str(tmp_path / "w"), "--spread", str(spread), "--seed", "1"])
    assert out.exit_code == 0, out.output
    assert "this run" in out.output and "19.00 ± 3.61" in out.output
    flat = " ".join(out.output.split())  # rich wraps the line where the temporary path makes it long
    assert "measured with another plan (train differ)" in flat and "X1" in flat
    assert calls == [(tmp_path / "w", 0), (tmp_path / "w", 1)]


def test_demo_seeds_n_runs_n_seeds_and_prints_and_writes_their_spread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Path, int]] = []
    monkeypatch.setattr(seeds_module, "run_demo", _fake_run_demo(calls))
    out = _cli(["--work", str(tmp_path), "--seeds", "3", "--seed", "0"])
    assert out.exit_code == 0, out.output
    assert [seed for _, seed in calls] == [0, 1, 2]
    saved = json.loads((tmp_path / "seeds.json").read_text())["summary"]
    assert saved["seeds"] == [0, 1, 2]
    assert "3 seeds (mean" in out.output and "19.00 ± 3.61" in out.output  # CLIP val: 20, 15, 22
    assert "best single model" in out.output
