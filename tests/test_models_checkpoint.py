"""Checkpoint dirs: save -> load gives identical embeddings, with nothing but the directory."""

from __future__ import annotations

import json

import pytest
import torch

from trafficsearch.errors import ConfigError
from trafficsearch.ioutil import file_sha256 as sha256_file
from trafficsearch.models import load_model
from trafficsearch.models.clip import create_clip, load_checkpoint, save_checkpoint

torch.set_num_threads(1)


def _perturb(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))


@pytest.mark.parametrize("name", ["ts-tiny-test", "ts-minilm-vit-s64"])
def test_round_trip_identical_embeddings(tmp_path, name) -> None:
    torch.manual_seed(0)
    model = create_clip(name, transform="openclip")
    _perturb(model.model)  # weights that no fresh init could reproduce
    out = save_checkpoint(tmp_path / "ckpt", model, config_yaml="model: {}\n")
    assert {p.name for p in out.iterdir()} == {"weights.safetensors", "model.json", "config.yaml"}
    info = json.loads((out / "model.json").read_text())
    assert info["name"] == name and info["preprocess"]["kind"] == "openclip"
    if name == "ts-minilm-vit-s64":  # portable: no machine path for the packaged MiniLM
        assert info["model_cfg"]["text_cfg"]["hf_model_name"] == "@minilm"

    torch.manual_seed(123)
    loaded = load_model(out)
    size = model.image_size
    pixels = torch.randn(3, 3, size, size)
    texts = ["This is a red Audi.", "A walking man who is aged over 60."]
    assert torch.equal(model.encode_images(pixels), loaded.encode_images(pixels))
    assert torch.equal(model.encode_texts(texts), loaded.encode_texts(texts))
    assert loaded.preprocess == model.preprocess
    manifest = loaded.manifest()
    assert manifest["weights_sha256"] == sha256_file(out / "weights.safetensors") == info["weights_sha256"]
    assert manifest["checkpoint"] == str(out.resolve())


def test_resave_replaces_atomically_and_bad_dirs_fail(tmp_path) -> None:
    model = create_clip("ts-tiny-test")
    save_checkpoint(tmp_path / "c", model)
    first = sha256_file(tmp_path / "c" / "weights.safetensors")
    _perturb(model.model)
    save_checkpoint(tmp_path / "c", model)
    assert sha256_file(tmp_path / "c" / "weights.safetensors") != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no .tmp/.old left behind

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="model.json"):
        load_checkpoint(tmp_path / "empty")
    other = create_clip("ts-minilm-vit-s64")
    save_checkpoint(tmp_path / "mismatch", other)
    (tmp_path / "mismatch" / "weights.safetensors").write_bytes(
        (tmp_path / "c" / "weights.safetensors").read_bytes()
    )
    with pytest.raises(ConfigError, match="do not match"):
        load_checkpoint(tmp_path / "mismatch")
