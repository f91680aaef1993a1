"""Pre-training and packaged checkpoints: a tiny pre-training run exports a checkpoint that loads back with
identical embeddings, `package:NAME` resolution and its errors, the shipped files against their manifest."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch

from trafficsearch.errors import ConfigError
from trafficsearch.experiments.pretrain import PLANS, PretrainPlan, plan_named, run_pretrain
from trafficsearch.ioutil import file_sha256
from trafficsearch.models.factory import load_model
from trafficsearch.models.pretrained import pretrained_root, read_manifest, resolve_pretrained, shipped_names
from trafficsearch.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = (
    "train.epochs=1",
    "train.batch_size=8",
    "train.threads=1",
    "train.save_every=1000",
    "train.async_checkpoint=false",
    "data.workers=0",
    "optim.warmup_steps=1",
)


@pytest.fixture(scope="module")
def tiny_pretrain(tmp_path_factory):
    work = tmp_path_factory.mktemp("pretrain")
    plan = PretrainPlan("clip-default", "pretrain/clip-default", n_train=24, n_val=8, seed=3, overrides=TINY)
    entry = run_pretrain(plan, work, workers=1, show_progress=False)
    return work, entry


@pytest.mark.slow
def test_tiny_pretraining_exports_only_trained_tensors_that_load_back_identically(tiny_pretrain):
    work, entry = tiny_pretrain
    export = Path(entry["export"])
    assert entry["sha256"] == file_sha256(export / "weights.safetensors")
    assert entry["command"] == "trafficsearch pretrain clip-default --ship" and entry["seed"] == 3
    info = json.loads((export / "model.json").read_text())
    base_keys = info["from_base"]["keys"]
    # the frozen MiniLM trunk comes from its package; everything trained is in the file
    assert base_keys and all(k.startswith("text.transformer.") for k in base_keys)
    from safetensors.torch import load_file

    stored = load_file(str(export / "weights.safetensors"))
    assert not set(stored) & set(base_keys)
    assert any(k.startswith("visual.") for k in stored) and "logit_scale" in stored
    full = load_model(work / "clip-default" / "best")
    shipped = load_model(export)
    pixels = torch.rand(3, 3, full.image_size, full.image_size)
    texts = ["red Audi sedan parked on a street", "photo of a woman in a long coat with a backpack"]
    assert torch.equal(full.encode_images(pixels), shipped.encode_images(pixels))
    assert torch.equal(full.encode_texts(texts), shipped.encode_texts(texts))
    # fine-tuning starts from it through the config key, as the demo's configs do
    from trafficsearch.train.clip_task import build_clip

    cfg = load_config("demo/default", [f"model.pretrained={export}"])
    start = build_clip(cfg, torch.device("cpu"))
    assert torch.equal(start.encode_images(pixels), shipped.encode_images(pixels))


@pytest.mark.slow
def test_a_tampered_export_is_refused_naming_the_file(tiny_pretrain, tmp_path):
    from safetensors.torch import load_file, save_file

    _, entry = tiny_pretrain
    export = Path(entry["export"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text((export / "model.json").read_text())
    state = load_file(str(export / "weights.safetensors"))
    state.pop("logit_scale")
    save_file(state, str(broken / "weights.safetensors"))
    with pytest.raises(ConfigError, match="weights do not match") as info:
        load_model(broken)
    assert "weights.safetensors" in str(info.value)


def test_package_names_resolve_in_one_place_with_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown packaged checkpoint 'no-such'") as info:
        resolve_pretrained("package:no-such")
    assert info.value.field == "model.pretrained"
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.json").write_text("{}")
    with pytest.raises(ConfigError, match="has no weights.safetensors") as info:
        resolve_pretrained("package:half", root=tmp_path)
    assert info.value.field == "model.pretrained" and "half" in str(info.value.path)
    with pytest.raises(ConfigError, match="unknown packaged checkpoint") as info:
        load_model("package:no-such")
    assert info.value.field == "model"
    from trafficsearch.train.clip_task import build_clip

    with pytest.raises(ConfigError, match="unknown packaged checkpoint") as info:
        build_clip(load_config("demo/default", ["model.pretrained=package:no-such"]), torch.device("cpu"))
    assert info.value.field == "model.pretrained"
    with pytest.raises(ConfigError, match="unknown pre-training"):
        plan_named("nope")


def test_shipped_checkpoints_match_their_manifest():
    manifest = read_manifest()["checkpoints"]
    assert set(manifest) == set(shipped_names()) == set(PLANS)
    total = 0
    for name, entry in manifest.items():
        weights = pretrained_root() / name / "weights.safetensors"
        assert file_sha256(weights) == entry["sha256"], name
        assert (
            entry["command"] == f"trafficsearch pretrain {name} --ship" and entry["seed"] == PLANS[name].seed
        )
        total += weights.stat().st_size
    assert total < 45e6  # small enough to ship in the wheel
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(p.endswith("*.safetensors") for p in data["trafficsearch"])


def test_demo_configs_fine_tune_from_the_shipped_checkpoints():
    for config, name in (("demo/default", "clip-default"), ("demo/blip-small", "blip-small")):
        cfg = load_config(config)
        assert cfg.model.pretrained == f"package:{name}"
        assert resolve_pretrained(cfg.model.pretrained).name == name
        assert cfg.train.epochs <= 3 and cfg.model.lock_image


@pytest.mark.slow
def test_tiny_blip_pretraining_keeps_the_minilm_trunk_out_of_the_file(tmp_path):
    plan = PretrainPlan(
        "blip-small", "pretrain/blip-small", n_train=16, n_val=8, seed=1, overrides=(*TINY, "data.max_val=8")
    )
    entry = run_pretrain(plan, tmp_path, workers=1, show_progress=False)
    export = Path(entry["export"])
    info = json.loads((export / "model.json").read_text())
    assert info["from_base"]["text_init"] == "@minilm"
    keys = info["from_base"]["keys"]
    # the frozen BERT part comes from the package, the cross-attention (trained) is in the file
    assert any(".attention.self.query." in k for k in keys)
    assert not any("crossattention" in k for k in keys)
    full = load_model(tmp_path / "blip-small" / "best")
    shipped = load_model(export)
    pixels = torch.rand(2, 3, 64, 64)
    texts = ["red Audi sedan parked on a street", "photo of a woman in a long coat with a backpack"]
    assert torch.equal(full.encode_images(pixels), shipped.encode_images(pixels))
    assert torch.equal(full.encode_texts(texts), shipped.encode_texts(texts))
    assert torch.equal(full.itm_scores(texts, pixels), shipped.itm_scores(texts, pixels))


def test_mean_text_pooling_for_a_minilm_text_encoder(tmp_path):
    """MiniLM's frozen [CLS] output is one vector for every caption; the config's mean pooling is not, and
    it survives a save/load."""
    from trafficsearch.models.blip import BlipRetrieval, create_blip, load_blip, load_blip_config

    texts = ["red Audi sedan parked on a street", "photo of a woman in a long coat with a backpack"]
    cfg = load_blip_config("blip-small-minilm3")
    assert cfg["text_pool"] == "mean"
    (tmp_path / "cls.json").write_text(json.dumps({**cfg, "text_pool": "cls"}))
    cls = create_blip(tmp_path / "cls.json")
    mean = create_blip("blip-small-minilm3")
    tok = cls.tokenizer(texts)
    with torch.no_grad():
        first = cls.hf.text_encoder(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
        a, b = torch.nn.functional.normalize(first.last_hidden_state[:, 0], dim=-1)
    assert float(a @ b) > 0.999  # why mean pooling: [CLS] carries nothing of the caption
    emb = mean.encode_texts(texts)
    assert float(emb[0] @ emb[1]) < 0.95
    mean.save(tmp_path / "ckpt")
    back = load_blip(tmp_path / "ckpt")
    assert back.text_pool == "mean" and torch.equal(back.encode_texts(texts), emb)
    with pytest.raises(ConfigError, match="not one of cls, mean"):
        BlipRetrieval(mean.hf, mean.tokenizer, mean.preprocess, name="x", text_pool="max")
    with pytest.raises(ConfigError, match="not one of cls, mean"):
        BlipRetrieval(mean.hf, mean.tokenizer, mean.preprocess, name="x", itm_pool="max")


def test_mean_itm_pooling_lets_the_pair_reach_the_itm_head(tmp_path):
    """Under MiniLM's frozen self-attention the [ENC] output is one vector whatever the caption and image
    (the shipped ITM head sat at the prior); the mean of the multimodal tokens differs by pair."""
    from trafficsearch.models.blip import create_blip, load_blip, load_blip_config

    texts = ["red Audi sedan parked on a street", "photo of a woman in a long coat with a backpack"]
    cfg = load_blip_config("blip-small-minilm3")
    assert cfg["itm_pool"] == "mean"
    (tmp_path / "cls.json").write_text(json.dumps({**cfg, "itm_pool": "cls"}))
    torch.manual_seed(0)
    mean = create_blip("blip-small-minilm3")
    cls = create_blip(tmp_path / "cls.json")
    cls.load_state_dict(mean.state_dict())
    mean.eval(), cls.eval()
    pixels = torch.rand(2, 3, 64, 64)
    pairs = {}
    for name, model in (("cls", cls), ("mean", mean)):
        captured: list[torch.Tensor] = []
        hook = model.hf.itm_head.register_forward_hook(
            lambda _m, args, _o, into=captured: into.append(args[0])
        )
        tok = model.tokenizer(texts)
        with torch.no_grad():
            model.itm_logits(tok.input_ids, tok.attention_mask, model.image_tokens(pixels))
        hook.remove()
        a, b = torch.nn.functional.normalize(captured[0], dim=-1)
        pairs[name] = float(a @ b)
    assert pairs["cls"] > 0.999 and pairs["mean"] < 0.99
    mean.save(tmp_path / "ckpt")
    back = load_blip(tmp_path / "ckpt")
    assert back.itm_pool == "mean"
    assert torch.equal(back.itm_scores(texts, pixels), mean.itm_scores(texts, pixels))
