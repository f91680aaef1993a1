"""Config tree: YAML + dotted overrides, and errors that name the offending key."""

from __future__ import annotations

import pytest
import yaml

from trafficsearch.errors import ConfigError
from trafficsearch.testing.datasets import TINY_CONFIG
from trafficsearch.train.config import load_config

REPO_CONFIGS = TINY_CONFIG.parent


def test_yaml_then_overrides_win(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.01\ntrain:\n  epochs: 3\n")
    cfg = load_config(
        path, ["optim.lr=3e-4", "train.max_steps=7", "model.pretrained=null", "data.transform=openclip"]
    )
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.train.epochs == 3 and cfg.train.max_steps == 7
    assert cfg.model.pretrained is None and cfg.data.transform == "openclip"
    assert load_config(None, ["optim.grad_clip=2"]).optim.grad_clip == 2.0  # int accepted for float
    assert yaml.safe_load(cfg.to_yaml())["optim"]["lr"] == pytest.approx(3e-4)  # resolved YAML round trip


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("optim.lrr=1", "optim.lrr"),
        ("nosection.x=1", "nosection"),
        ("train.epochs=two", "train.epochs"),
        ("train.epochs=0", "train.epochs"),
        ("data.transform=squash", "data.transform"),
        ("model.lock_text=maybe", "model.lock_text"),
    ],
)
def test_bad_override_names_the_key(override, field) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert err.value.field == field
    assert field in err.value.one_line()


def test_bad_yaml_key_names_file_and_key(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.path == str(path) and err.value.field == "train.epoch"
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_shipped_demo_configs_load() -> None:
    names = sorted(p.name for p in REPO_CONFIGS.glob("*.yaml"))
    assert {"default.yaml", "fast.yaml", "tiny-test.yaml"} <= set(names)
    for name in names:
        cfg = load_config(REPO_CONFIGS / name)
        assert cfg.train.epochs >= 1
