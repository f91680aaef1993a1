"""Model creation by name (tiny registered configs), local checkpoint files, the default MiniLM model."""

from __future__ import annotations

import pytest
import torch

from trafficsearch.errors import ConfigError
from trafficsearch.models import load_model
from trafficsearch.models.clip import create_clip, lock_text, text_pooled, text_project, text_trunk_frozen
from trafficsearch.models.registry import SEED_MODELS, get_model_config, list_models, register_model_config

torch.set_num_threads(1)

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 16, "layers": 1, "head_width": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


def test_seed_models_stay_reachable_by_name() -> None:
    import open_clip

    for name, tag in SEED_MODELS.items():
        assert name in list_models()
        assert tag in open_clip.list_pretrained_tags_by_model(name)
        assert get_model_config(name)["embed_dim"] == 1024


def test_registered_tiny_config_creates_by_name() -> None:
    register_model_config("test-tiny-a", TINY)
    model = load_model("open_clip:test-tiny-a")
    assert model.embed_dim == 16 and model.image_size == 16
    img = model.encode_images(torch.randn(3, 3, 16, 16))
    txt = model.encode_texts(["a red car", "a blue bus"])
    assert img.shape == (3, 16) and txt.shape == (2, 16)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_unknown_name_and_tag_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        load_model("open_clip:no-such-model")
    register_model_config("test-tiny-b", TINY)
    with pytest.raises(ConfigError, match="neither a file nor a pretrained tag"):
        create_clip("test-tiny-b", "not_a_tag")
    with pytest.raises(ConfigError):
        load_model(tmp_path / "missing")


def test_load_from_local_checkpoint_file(tmp_path) -> None:
    register_model_config("test-tiny-c", TINY)
    torch.manual_seed(1)
    source = create_clip("test-tiny-c")
    path = tmp_path / "weights.pt"
    torch.save(source.model.state_dict(), path)
    torch.manual_seed(2)  # a different random init, overwritten by the file
    loaded = load_model(f"open_clip:test-tiny-c:{path}")
    pixels = torch.randn(2, 3, 16, 16)
    assert torch.allclose(source.encode_images(pixels), loaded.encode_images(pixels), atol=1e-6)
    assert torch.allclose(source.encode_texts(["x y"]), loaded.encode_texts(["x y"]), atol=1e-6)
    manifest = loaded.manifest()
    assert manifest["checkpoint"] == str(path.resolve()) and len(manifest["weights_sha256"]) == 64


def test_default_minilm_model_offline_and_deterministic() -> None:
    import os

    a = load_model("open_clip:ts-minilm-vit-s64")
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert a.embed_dim == 256 and a.image_size == 64
    texts = ["This is a white Audi.", "A female pedestrian who is a minor, and is standing sideways."]
    e1, e2 = a.encode_texts(texts), a.encode_texts(texts)
    assert torch.equal(e1, e2)
    # the trunk is the pretrained MiniLM: its pooled features do not depend on the random projection init
    b = load_model("open_clip:ts-minilm-vit-s64")
    tokens = a.tokenize(texts)
    with torch.no_grad():
        assert torch.allclose(text_pooled(a.model, tokens), text_pooled(b.model, tokens), atol=1e-5)
        # and they carry meaning: a paraphrase is closer than an unrelated caption
        p = torch.nn.functional.normalize(
            text_pooled(a.model, a.tokenize(["This is a white Audi.", "A white Audi.", texts[1]])), dim=-1
        )
    assert p[0] @ p[1] > p[0] @ p[2]
    manifest = a.manifest()
    assert manifest["name"] == "ts-minilm-vit-s64" and manifest["weights_sha256"].startswith("state:")
    assert manifest["preprocess"]["kind"] == "pad"


def test_lock_text_freezes_trunk_but_not_projection() -> None:
    m = create_clip("ts-tiny-test")
    lock_text(m.model, 0)
    assert text_trunk_frozen(m.model)
    assert m.model.text_projection.requires_grad
    tokens = m.tokenize(["a b c"])
    with torch.no_grad():
        full = m.model.encode_text(tokens)
        split = text_project(m.model, text_pooled(m.model, tokens))
    assert torch.allclose(full, split, atol=1e-6)
    m2 = create_clip("ts-tiny-test")
    lock_text(m2.model, 1)
    assert not text_trunk_frozen(m2.model)


def test_minilm_encode_texts_trims_padding_and_keeps_input_order() -> None:
    """Query encoding batches by length and drops all-padding columns; the vectors must not change."""
    torch.manual_seed(0)
    model = create_clip("ts-minilm-vit-s64")
    model.text_batch_size = 2  # several length-sorted batches
    texts = [
        "A pedestrian wearing a short-sleeved shirt with a logo, carrying a backpack, facing the camera.",
        "A red car.",
        "This is a grey Chery Sedan.",
        "A woman.",
        "A man between 18 and 60 in trousers.",
    ]
    got = model.encode_texts(texts)
    with torch.no_grad():
        full = torch.nn.functional.normalize(model.model.encode_text(model.tokenize(texts)).float(), dim=-1)
    assert model.tokenize(texts).shape[1] == 64  # the reference really ran on the padded context
    torch.testing.assert_close(got, full, rtol=1e-4, atol=1e-5)
