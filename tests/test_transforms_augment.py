"""Training augmentation on cached uint8 squares: near-1 crop and RandAugment switches, deterministic."""

from __future__ import annotations

import pytest
import torch

from trafficsearch.data.transforms import TrainAugment
from trafficsearch.errors import ConfigError
from trafficsearch.train.config import load_config


def _square(seed: int = 0, size: int = 32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen)


def test_no_switch_is_the_identity() -> None:
    aug = TrainAugment(32, seed=0)
    batch = torch.stack([_square(0), _square(1)])
    assert not aug.active
    assert aug.batch(batch, epoch=0, indices=[0, 1]) is batch


def test_crop_keeps_geometry_and_is_deterministic_per_seed_epoch_index() -> None:
    aug = TrainAugment(32, seed=3, crop_scale=(0.5, 0.6))  # far from 1: every draw visibly crops
    x = _square()
    a, b = aug.one(x, epoch=1, index=7), aug.one(x, epoch=1, index=7)
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b)  # same (seed, epoch, index) -> same pixels (resume / DDP exactness)
    assert not torch.equal(a, x)
    assert not torch.equal(a, aug.one(x, epoch=2, index=7))
    assert not torch.equal(a, TrainAugment(32, seed=4, crop_scale=(0.5, 0.6)).one(x, epoch=1, index=7))


def test_crop_near_one_with_full_scale_and_square_ratio_is_identity_geometry() -> None:
    # scale 1 and ratio 1: the box is the whole square, resized to itself
    aug = TrainAugment(32, seed=0, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    x = _square()
    assert torch.equal(aug.one(x, 0, 0), x)


def test_randaugment_switch_changes_some_images_and_only_with_prob() -> None:
    x = _square()
    on = TrainAugment(32, seed=0, randaugment={"n": 2, "magnitude": 9, "prob": 1.0})
    changed = sum(not torch.equal(on.one(x, 0, i), x) for i in range(20))
    assert changed >= 15  # Identity may be drawn twice, rarely
    off = TrainAugment(32, seed=0, randaugment={"n": 2, "magnitude": 9, "prob": 0.0})
    assert all(torch.equal(off.one(x, 0, i), x) for i in range(10))


def test_config_switches_validate() -> None:
    cfg = load_config(None, ["data.crop_scale=[0.95, 1.0]", "data.randaugment={n: 2, magnitude: 5}"])
    assert cfg.data.crop_scale == [0.95, 1.0] and cfg.data.randaugment.prob == 0.5
    assert load_config(None, ["data.randaugment=null"]).data.randaugment is None
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.crop_scale=[0.9, 1.2]"])
    assert err.value.field == "data.crop_scale"
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.randaugment={n: 2, magnitude: 50}"])
    assert err.value.field == "data.randaugment.magnitude"
