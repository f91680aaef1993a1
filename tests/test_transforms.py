"""Pad-to-square geometry: aspect kept, centred, zero padding; open_clip's resize + centre crop option."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from trafficsearch.data.transforms import (
    Geometry,
    Preprocess,
    build_transform,
    pad_to_square,
    resize_center_crop,
)
from trafficsearch.errors import ConfigError


def _solid(w: int, h: int, color=(200, 100, 50)) -> Image.Image:
    return Image.new("RGB", (w, h), color)


@pytest.mark.parametrize(("w", "h"), [(40, 20), (20, 40), (33, 17), (64, 64), (10, 90)])
def test_pad_keeps_aspect_and_centres_on_zeros(w, h) -> None:
    out = np.asarray(pad_to_square(_solid(w, h), 64)).astype(int)
    assert out.shape == (64, 64, 3)
    filled = out.sum(axis=2) > 30
    rows, cols = np.where(filled)
    fh, fw = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert max(fh, fw) == 64  # the longest side fills the square
    assert abs(fw / fh - w / h) <= 2 / min(fh, fw) + 0.02  # aspect kept (rounding to whole pixels)
    # centred: the margins on either side differ by at most one pixel
    assert abs(rows.min() - (63 - rows.max())) <= 1 and abs(cols.min() - (63 - cols.max())) <= 1
    assert (out[~filled] == 0).all()  # padding is exactly zero
    assert np.abs(out[filled] - np.array([200, 100, 50])).max() <= 3


def test_openclip_option_crops_instead_of_padding() -> None:
    img = Image.new("RGB", (80, 40), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 40))  # a white stripe at the far left
    out = np.asarray(resize_center_crop(img, 32))
    assert out.shape == (32, 32, 3)
    assert out.max() < 10  # the stripe is cut off; the centre crop has no zero padding to add
    padded = np.asarray(pad_to_square(img, 32))
    assert padded.max() > 200  # pad keeps the whole object


def test_stretch_option_fills_the_square_and_distorts_the_aspect() -> None:
    img = Image.new("RGB", (80, 40), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 40))  # a white stripe at the far left, full height
    out = np.asarray(Geometry(Preprocess(kind="stretch", image_size=32))(img))
    assert out.shape == (32, 32, 3)
    white_cols = np.flatnonzero(out[:, :, 0].min(axis=0) > 200)
    assert white_cols.min() == 0 and 3 <= white_cols.max() <= 4  # 10/80 of the width: squeezed, not cut
    assert out[:, 8:, :].max() < 60  # no padding band anywhere: every row is image


def test_eval_transform_normalises_and_config_is_checked() -> None:
    pre = Preprocess(kind="pad", image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = build_transform(pre)(_solid(16, 32, (255, 255, 255)))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert x.max().item() == pytest.approx(1.0) and x.min().item() == pytest.approx(-1.0)  # white, zero pad
    assert Preprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(ConfigError) as err:
        Preprocess(kind="squash")
    assert err.value.field == "data.transform"
