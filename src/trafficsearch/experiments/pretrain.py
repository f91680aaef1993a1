"""The pre-training stage, as the seed had: the web corpus, a `trafficsearch train` run, the packaged export.

Why one function per named checkpoint: the manifest gives "the one command" that reproduces each shipped
checkpoint (`trafficsearch pretrain NAME --ship`), and benchmarks/pretrain.py re-runs exactly it. Each step
resumes: the corpus skips complete images, training continues from last/, the export is rewritten.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trafficsearch.benchmarking import machine_info
from trafficsearch.errors import ConfigError
from trafficsearch.ioutil import atomic_write_json


@dataclass(frozen=True)
class PretrainPlan:
    """One shipped checkpoint: its config, the web corpus it is trained on, the seed, extra overrides."""

    name: str
    config: str
    n_train: int = 12000
    n_val: int = 1000
    seed: int = 0
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def command(self) -> str:
        return f"trafficsearch pretrain {self.name} --ship"


# Both read one corpus (same sizes and seed): BLIP-small an evenly spread data.max_train of its images.
PLANS: dict[str, PretrainPlan] = {
    "clip-default": PretrainPlan("clip-default", "pretrain/clip-default"),
    "blip-small": PretrainPlan("blip-small", "pretrain/blip-small"),
}


def plan_named(name: str) -> PretrainPlan:
    if name not in PLANS:
        raise ConfigError(f"unknown pre-training {name!r}; known: {', '.join(PLANS)}", field="name")
    return PLANS[name]


def run_pretrain(
    plan: PretrainPlan,
    work: str | Path = "runs/pretrain",
    *,
    export: str | Path | None = None,
    ship: bool = False,
    workers: int = 2,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Corpus -> train -> export; `ship` writes into the package (resources/pretrained/NAME + manifest).

    Returns the manifest entry: command, seed, sha256, sizes, corpus, best val mAP@10 on the corpus's val.
    """
    from trafficsearch.data.synth.generate import generate_web_corpus
    from trafficsearch.models.export import export_pretrained
    from trafficsearch.models.pretrained import MANIFEST, pretrained_root, read_manifest
    from trafficsearch.train.config import load_config
    from trafficsearch.train.loop import train, write_summary

    work = Path(work)
    start = time.perf_counter()
    corpus = work / f"web-{plan.n_train}-{plan.n_val}-seed{plan.seed}"
    generate_web_corpus(
        corpus, plan.n_train, plan.n_val, seed=plan.seed, workers=workers, progress=show_progress
    )
    rendered = time.perf_counter()
    run_dir = work / plan.name
    cfg = load_config(
        plan.config,
        [f"data.root={corpus}", f"train.output_dir={run_dir}", f"train.seed={plan.seed}", *plan.overrides],
    )
    result = train(cfg, run_dir, resume=(run_dir / "last").is_dir(), show_progress=show_progress)
    write_summary(result)
    best = run_dir / "best" if (run_dir / "best").is_dir() else run_dir / "last"
    trained = time.perf_counter()
    out = pretrained_root() / plan.name if ship else Path(export or work / "export" / plan.name)
    summary = export_pretrained(best, out)
    entry = {
        "command": plan.command(),
        "seed": plan.seed,
        "config": plan.config,
        "overrides": list(plan.overrides),
        "corpus": {"kind": "web", "n_train": plan.n_train, "n_val": plan.n_val, "seed": plan.seed},
        "sha256": summary["sha256"],
        "bytes": summary["bytes"],
        "parameters_stored": summary["parameters_kept"],
        "tensors_from_base": summary["tensors_from_base"],
        "best_val_map10": result.best_map,
        "steps": result.step,
        "render_s": round(rendered - start, 1),
        "train_s": round(trained - rendered, 1),
        "machine": machine_info(),
    }
    if ship:
        manifest = read_manifest()
        manifest["checkpoints"][plan.name] = entry
        manifest["note"] = (
            "Packaged pre-trained checkpoints (models/pretrained.py): `command` reproduces each one "
            "(benchmarks/pretrain.py re-runs it and compares); sha256 is that of NAME/weights.safetensors."
        )
        atomic_write_json(pretrained_root() / MANIFEST, manifest)
    return {**entry, "export": str(out), "plan": asdict(plan)}
