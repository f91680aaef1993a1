"""The seed's pipeline as `stages:` (configs/seed/*.yaml): pre-train -> fine-tune on train -> fine-tune on the
A-board split, each from the previous stage's best checkpoint. The seed configs' own stage list runs on the
tiny model over the layout the configs document, and a run interrupted mid-stage resumes without redoing
finished stages and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from trafficsearch.testing.datasets import TINY_CONFIG, make_split
from trafficsearch.train.config import BUILTIN_CONFIGS, load_config
from trafficsearch.train.loop import train
from trafficsearch.train.stages import stage_plan

torch.set_num_threads(1)
SEED_CONFIGS = sorted((BUILTIN_CONFIGS / "seed").glob("*.yaml"))


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("path", SEED_CONFIGS, ids=lambda p: p.stem)
def test_seed_configs_chain_pretrain_finetune_aboard(path: Path) -> None:
    cfg = load_config(path)
    plan = stage_plan(cfg, Path("runs/x"))
    assert [(name, s.data.train_split) for name, s, _ in plan] == [
        ("pretrain", "pretrain"),
        ("finetune", "train"),
        ("aboard", "aboard"),
    ]
    assert plan[0][1].model.pretrained == cfg.model.pretrained  # stage 1 starts from the public weights
    assert plan[1][1].model.pretrained == str(Path("runs/x/pretrain/best"))
    assert plan[2][1].model.pretrained == str(Path("runs/x/finetune/best"))
    assert plan[2][1].optim.lr < plan[1][1].optim.lr  # the last fine-tune is gentler
    assert all(s.data.val_split == "val" and s.data.root == cfg.data.root for _, s, _ in plan)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The layout the seed configs document: pretrain, train, aboard and val splits under one root."""
    root = tmp_path_factory.mktemp("seedlayout") / "data"
    for split, n, seed in (("pretrain", 12, 3), ("train", 12, 1), ("aboard", 8, 4), ("val", 8, 2)):
        make_split(root, split, n, seed)
    return root


def _config(tmp_path: Path, data: Path) -> Path:
    """The tiny model with the stage list of configs/seed/vit-h-14-a.yaml, verbatim."""
    base = yaml.safe_load(TINY_CONFIG.read_text())
    base["data"]["root"] = str(data)
    base["train"].update(epochs=1, save_every=1)
    base["stages"] = yaml.safe_load((BUILTIN_CONFIGS / "seed" / "vit-h-14-a.yaml").read_text())["stages"]
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def _losses(run_dir: Path) -> list[float]:
    rows = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [r["loss"] for r in rows if r["type"] == "train"]


def test_three_stages_resume_mid_stage_equals_uninterrupted(tmp_path, data) -> None:
    cfg = load_config(_config(tmp_path, data))
    full = train(cfg, tmp_path / "full", show_progress=False)
    assert full.finished and full.run_dir == tmp_path / "full" / "aboard"
    # pretrain: 2 epochs x 3 batches; finetune: 1 x 3; aboard: 1 x 2
    assert [len(_losses(tmp_path / "full" / s)) for s in ("pretrain", "finetune", "aboard")] == [6, 3, 2]
    for stage, source in (("finetune", "pretrain"), ("aboard", "finetune")):
        saved = yaml.safe_load((tmp_path / "full" / stage / "config.yaml").read_text())
        assert saved["model"]["pretrained"] == str(tmp_path / "full" / source / "best")

    cut = tmp_path / "cut"

    def kill_mid_finetune(step: int) -> None:
        if step == 2 and (cut / "finetune").exists():
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, cut, show_progress=False, on_step=kill_mid_finetune)
    assert not (cut / "aboard").exists()
    pretrain_summary = (cut / "pretrain" / "summary.json").stat().st_mtime_ns
    pretrain_metrics = (cut / "pretrain" / "metrics.jsonl").read_text()

    result = train(cfg, cut, resume=True, show_progress=False)
    assert result.finished and result.run_dir == cut / "aboard" and result.step == 2
    # the finished stage was skipped, not redone
    assert (cut / "pretrain" / "summary.json").stat().st_mtime_ns == pretrain_summary
    assert (cut / "pretrain" / "metrics.jsonl").read_text() == pretrain_metrics
    # the interrupted stage continued from its step 2 and every stage matches the uninterrupted run
    for stage in ("pretrain", "finetune", "aboard"):
        assert _losses(cut / stage) == _losses(tmp_path / "full" / stage), stage
    a = load_file(str(tmp_path / "full" / "aboard" / "last" / "weights.safetensors"))
    b = load_file(str(cut / "aboard" / "last" / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
