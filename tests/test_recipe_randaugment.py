"""The seed's RandomAugment subset and near-1 crop: op set, magnitudes, fills, sampling, determinism."""

from __future__ import annotations

import pickle
import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from trafficsearch.data.randaugment import (
    GREY_FILL,
    RANDAUG_OPS,
    OpCall,
    RandAugmentConfig,
    RandomAugment,
    apply_op,
    enhance_factor,
    random_resized_crop_near_one,
    shear_amount,
    translate_pixels,
)
from trafficsearch.errors import ConfigError

torch.set_num_threads(1)


def noise_image(size: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_op_set_is_the_seed_subset_without_flip():
    assert RANDAUG_OPS == (
        "Identity",
        "AutoContrast",
        "Brightness",
        "Sharpness",
        "Equalize",
        "ShearX",
        "ShearY",
        "TranslateX",
        "TranslateY",
    )
    assert not any("flip" in op.lower() or "mirror" in op.lower() for op in RANDAUG_OPS)
    assert RandAugmentConfig().ops == RANDAUG_OPS
    config = RandAugmentConfig()
    assert (config.n, config.magnitude, config.prob, config.fill) == (2, 5.0, 0.5, (128, 128, 128))


def test_magnitude_to_arguments():
    assert enhance_factor(5) == pytest.approx(1.0)
    assert enhance_factor(0) == pytest.approx(0.1)
    assert enhance_factor(10) == pytest.approx(1.9)
    assert shear_amount(5) == pytest.approx(0.15)
    assert translate_pixels(5, 224) == pytest.approx(5.0)
    assert translate_pixels(5, 448) == pytest.approx(10.0)
    assert translate_pixels(5, 64) == pytest.approx(5.0 * 64 / 224)
    assert translate_pixels(5, 224, translate_const=20) == pytest.approx(10.0)


@pytest.mark.parametrize("op", ["Brightness", "Sharpness"])
def test_enhance_ops_are_identities_at_m5_but_not_at_m8(op):
    image = noise_image()
    at_m5 = RandomAugment(ops=(op,), prob=1.0, magnitude=5)(image, random.Random(0))
    at_m8 = RandomAugment(ops=(op,), prob=1.0, magnitude=8)(image, random.Random(0))
    assert np.array_equal(pixels(at_m5), pixels(image))
    assert not np.array_equal(pixels(at_m8), pixels(image))


@pytest.mark.parametrize("side", [224, 448])
def test_translate_x_shifts_by_scaled_pixels_with_grey_fill(side):
    image = noise_image(side)
    shift = round(translate_pixels(5, side))
    for sign in (1, -1):
        out = pixels(apply_op(image, OpCall("TranslateX", sign * translate_pixels(5, side))))
        src = pixels(image)
        if sign > 0:  # content moves left, grey enters on the right
            assert np.array_equal(out[:, :-shift], src[:, shift:])
            assert (out[:, -shift:] == GREY_FILL).all()
        else:
            assert np.array_equal(out[:, shift:], src[:, :-shift])
            assert (out[:, :shift] == GREY_FILL).all()


def test_translate_y_moves_rows_with_grey_fill():
    image = noise_image(224)
    out = pixels(apply_op(image, OpCall("TranslateY", 5.0)))
    assert np.array_equal(out[:-5], pixels(image)[5:])
    assert (out[-5:] == GREY_FILL).all()


def test_shear_is_about_the_top_left_corner_with_grey_fill():
    image = Image.new("RGB", (100, 100), (255, 0, 0))
    out = pixels(apply_op(image, OpCall("ShearX", 0.3)))
    assert (out[0] == (255, 0, 0)).all()  # row 0 does not move
    bottom = out[-1]
    assert (bottom[:25] == GREY_FILL).all()  # row 99 moved right by ~30 px
    assert (bottom[35:] == (255, 0, 0)).all()
    out_y = pixels(apply_op(image, OpCall("ShearY", 0.3)))
    assert (out_y[:, 0] == (255, 0, 0)).all()
    assert (out_y[:25, -1] == GREY_FILL).all()


def test_ops_are_drawn_with_replacement_and_applied_with_probability():
    always = RandomAugment(prob=1.0)
    rng = random.Random(0)
    plans = [always.plan((64, 64), rng) for _ in range(3000)]
    assert all(len(p) == 2 for p in plans)
    repeats = sum(p[0].name == p[1].name for p in plans) / len(plans)
    assert 0.08 < repeats < 0.14  # 1/9 with replacement; 0 without
    counts = Counter(call.name for p in plans for call in p)
    assert set(counts) == set(RANDAUG_OPS)
    signs = {np.sign(c.arg) for p in plans for c in p if c.name in ("ShearX", "TranslateY")}
    assert signs == {1.0, -1.0}

    half = RandomAugment()
    rng = random.Random(1)
    applied = [len(half.plan((64, 64), rng)) for _ in range(3000)]
    assert 0.93 < sum(applied) / len(applied) < 1.07  # 2 ops x 0.5
    assert set(applied) == {0, 1, 2}


def test_seeded_draws_are_reproducible_for_both_generator_kinds():
    image = noise_image(48)
    augment = RandomAugment(magnitude=9)
    outs = [pixels(augment(image, random.Random(seed))) for seed in (3, 3)]
    assert np.array_equal(outs[0], outs[1])
    gens = [pixels(augment(image, torch.Generator().manual_seed(7))) for _ in range(2)]
    assert np.array_equal(gens[0], gens[1])
    differing = {pixels(augment(image, random.Random(s))).tobytes() for s in range(20)}
    assert len(differing) > 3
    copy = pickle.loads(pickle.dumps(augment))  # DataLoader workers receive a pickled copy
    assert np.array_equal(pixels(copy(image, random.Random(3))), outs[0])


def test_uint8_tensor_input_matches_the_pil_path():
    image = noise_image(40, seed=2)
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    augment = RandomAugment(magnitude=10, prob=1.0)
    for seed in range(8):
        out_t = augment(tensor, random.Random(seed))
        out_p = augment(image, random.Random(seed))
        assert out_t.dtype == torch.uint8 and out_t.shape == tensor.shape
        assert np.array_equal(out_t.permute(1, 2, 0).numpy(), np.asarray(out_p))


def test_never_flips_left_and_right():
    array = np.zeros((64, 64, 3), dtype=np.uint8)
    array[:, :32] = (200, 20, 20)
    array[:, 32:] = (20, 20, 200)
    image = Image.fromarray(array, "RGB")
    augment = RandomAugment(prob=1.0)  # the seed's N=2, M=5, every drawn op applied
    rng = random.Random(0)
    for _ in range(300):
        out = pixels(augment(image, rng))
        redness = out[..., 0] - out[..., 2]  # grey fill counts as 0
        assert redness[:, :32].mean() > 0 > redness[:, 32:].mean()


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="HorizontalFlip"):
        RandAugmentConfig(ops=("Identity", "HorizontalFlip"))
    with pytest.raises(ConfigError, match="magnitude"):
        RandAugmentConfig(magnitude=11)
    with pytest.raises(ConfigError, match="prob"):
        RandAugmentConfig(prob=1.5)
    with pytest.raises(ConfigError, match="unknown key"):
        RandAugmentConfig.from_dict({"N": 2})
    assert RandAugmentConfig.from_dict({"n": 3, "ops": ["Identity"]}).ops == ("Identity",)


def test_near_one_crop_keeps_most_of_the_image_reproducibly():
    crop = random_resized_crop_near_one(32, scale=(0.95, 1.0), ratio=(0.75, 1.33))
    rng = random.Random(0)
    for _ in range(200):
        top, left, h, w = crop.params(120, 100, rng)
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 120
        assert h * w >= 0.95 * 120 * 100 * 0.98  # rounding of sides
    # an input wider than the ratio range falls back to torchvision's centre crop at the widest ratio
    assert crop.params(200, 100, random.Random(0)) == (0, 33, 100, 133)
    image = noise_image(64)
    a = crop(image, random.Random(5))
    b = crop(image, random.Random(5))
    assert a.size == (32, 32) and np.array_equal(pixels(a), pixels(b))
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    out = crop(tensor, torch.Generator().manual_seed(0))
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8


def test_near_one_crop_random_interpolation_and_validation():
    crop = random_resized_crop_near_one(16, interpolation="random")
    image = noise_image(64)
    results = {pixels(crop(image, random.Random(s))).tobytes() for s in range(10)}
    assert len(results) > 1
    with pytest.raises(ConfigError, match="scale"):
        random_resized_crop_near_one(16, scale=(0.9, 1.2))
    with pytest.raises(ConfigError, match="interpolation"):
        random_resized_crop_near_one(16, interpolation="nearest")
