"""Staged fine-tuning: stage 2 starts from stage 1's best checkpoint, each stage has its run dir, resume
skips finished stages and continues an interrupted one."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from trafficsearch.errors import ConfigError
from trafficsearch.testing.datasets import TINY_CONFIG
from trafficsearch.train.config import load_config
from trafficsearch.train.loop import train

torch.set_num_threads(1)


class Interrupt(Exception):
    pass


def _write(tmp_path, data):
    path = tmp_path / "staged.yaml"
    base = yaml.safe_load(TINY_CONFIG.read_text())
    base["data"]["root"] = str(data)
    base["stages"] = [
        {"name": "pre", "train": {"epochs": 2}},
        # a vanishing lr: stage 2's weights after its steps are its starting weights
        {"name": "fine", "optim.lr": 1e-12, "optim.warmup_steps": 0, "train": {"epochs": 1}},
    ]
    path.write_text(yaml.safe_dump(base))
    return path


def test_stage_two_starts_from_stage_one_best_and_resumes(tmp_path, tiny_data) -> None:
    data = tiny_data
    cfg = load_config(_write(tmp_path, data))

    def cut(step: int) -> None:
        if step == 2 and (tmp_path / "run" / "fine").exists():
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "run", show_progress=False, on_step=cut)
    assert json.loads((tmp_path / "run" / "pre" / "summary.json").read_text())["finished"]
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, tmp_path / "run", show_progress=False)
    result = train(cfg, tmp_path / "run", resume=True, show_progress=False)
    assert result.finished and result.run_dir == tmp_path / "run" / "fine" and result.step == 3
    fine_cfg = yaml.safe_load((tmp_path / "run" / "fine" / "config.yaml").read_text())
    assert fine_cfg["model"]["pretrained"] == str(tmp_path / "run" / "pre" / "best")
    assert fine_cfg["optim"]["lr"] == pytest.approx(1e-12) and fine_cfg["stages"] == []
    best = load_file(str(tmp_path / "run" / "pre" / "best" / "weights.safetensors"))
    after = load_file(str(tmp_path / "run" / "fine" / "last" / "weights.safetensors"))
    torch.manual_seed(0)
    from trafficsearch.models import load_model

    init = load_model("open_clip:ts-tiny-test").model.state_dict()
    key = "visual.proj"
    assert not torch.equal(best[key], init[key])  # stage 1 trained
    for k in best:
        torch.testing.assert_close(after[k], best[k], rtol=0, atol=1e-6)
    rows = (tmp_path / "run" / "pre" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in rows]
    assert max(steps) == 6  # stage 1 was not rerun on resume


def test_bad_stage_key_names_the_stage(tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["stages=[{name: a, optim: {lrr: 1}}]"])
    assert err.value.field == "stages[0].optim.lrr"
    with pytest.raises(ConfigError) as err:
        load_config(None, ["stages=[{name: a}, {name: a}]"])
    assert err.value.field == "stages[1].name"
