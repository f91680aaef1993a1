"""A pretrained tag keeps open_clip's own eval preprocessing (resize_mode, fill_color, mean/std,
interpolation): checked against open_clip's image_transform_v2 as the oracle; the project's pad applies only
where a config asks for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trafficsearch.models import load_model
from trafficsearch.models.clip import create_clip
from trafficsearch.models.registry import register_model_config

torch.set_num_threads(1)

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 16, "layers": 1, "head_width": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _register_tag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, **pre: object) -> str:
    """A tiny architecture with one pretrained tag whose weights are a local file this test writes."""
    import open_clip.pretrained

    register_model_config(name, TINY)
    torch.manual_seed(0)
    path = tmp_path / f"{name}.pt"
    torch.save(create_clip(name).model.state_dict(), path)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, name, {"local": {"file": str(path), **pre}})
    return "local"


def _photo(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width * 1000 + height)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _oracle(model: torch.nn.Module, image: Image.Image) -> torch.Tensor:
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)(image)


def test_squash_tag_keeps_its_preprocessing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tag = _register_tag(
        monkeypatch,
        tmp_path,
        "ts-test-squash",
        resize_mode="squash",
        interpolation="bilinear",
        mean=MEAN,
        std=STD,
    )
    model = load_model(f"open_clip:ts-test-squash:{tag}")
    pre = model.preprocess
    assert (pre.kind, pre.interpolation, pre.mean, pre.std) == ("stretch", "bilinear", MEAN, STD)
    assert pre.image_size == 32
    for size in ((50, 20), (20, 61)):
        image = _photo(*size)
        ours = model.image_transform()(image)
        torch.testing.assert_close(ours, _oracle(model.model, image), atol=2e-2, rtol=0)
    assert model.manifest()["preprocess"]["kind"] == "stretch"  # the index records what it really used


def test_longest_tag_keeps_its_fill_colour(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tag = _register_tag(monkeypatch, tmp_path, "ts-test-longest", resize_mode="longest", fill_color=128)
    model = create_clip("ts-test-longest", tag)
    assert (model.preprocess.kind, model.preprocess.fill) == ("pad", 128)
    pre = model.preprocess
    for size in ((64, 16), (20, 61)):  # wide: padded above and below; tall: left and right
        image = _photo(*size)
        ours = model.image_transform()(image)
        torch.testing.assert_close(ours, _oracle(model.model, image), atol=1e-5, rtol=0)
    grey = torch.tensor([(128 / 255 - m) / s for m, s in zip(pre.mean, pre.std, strict=True)])
    torch.testing.assert_close(ours[:, 0, 0], grey)  # grey padding, not the project's black


def test_config_asking_for_pad_replaces_only_the_geometry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tag = _register_tag(
        monkeypatch,
        tmp_path,
        "ts-test-pad",
        resize_mode="squash",
        interpolation="bilinear",
        mean=MEAN,
        std=STD,
    )
    model = create_clip("ts-test-pad", tag, transform="pad")  # a training config's data.transform: pad
    pre = model.preprocess
    assert (pre.kind, pre.fill, pre.interpolation, pre.mean, pre.std) == ("pad", 0, "bilinear", MEAN, STD)
    out = model.image_transform()(_photo(64, 16))
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([-m / s for m, s in zip(MEAN, STD, strict=True)]))


def test_untagged_models_keep_the_project_pad() -> None:
    model = create_clip("ts-tiny-test")
    assert model.preprocess.kind == "pad" and model.preprocess.fill == 0
    assert "fill" not in model.preprocess.to_dict()  # model.json / index fingerprints unchanged
