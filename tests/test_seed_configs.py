"""The seed configs build their real architectures (random weights, offline) and take one training step on
CPU: the loss is finite, locked parameters stay bit-identical, unlocked ones change.

Memory: one config at a time, everything freed after (ViT-H-14 ~11 GB peak for B). XLM-R: its sentencepiece
tokenizer and hub config are not available offline, so the text tower is built from a local XLMRobertaConfig
with a stand-in BERT tokenizer, and its trunk is locked except the last layer for the test (a fully trainable
XLM-R large + ViT-H-14 in fp32 with AdamW needs ~13 GB more than this machine can spare). Strategy A runs
in fp32 with the text tower locked: its pure bf16 is far too slow on a CPU without bf16 units (the cast path
is tested on the tiny model in test_train_recipe.py) and full fp32 fine-tuning of ViT-H-14 needs ~16 GB."""

from __future__ import annotations

import gc
import math
from pathlib import Path

import pytest
import torch

from trafficsearch.data.labels import parse_line
from trafficsearch.testing.offline import offline_clip
from trafficsearch.train.clip_task import ClipTask
from trafficsearch.train.config import load_config
from trafficsearch.train.dist import DistInfo
from trafficsearch.train.loop import Stepper
from trafficsearch.train.task import Batch

CASES = {
    # config: (open_clip name, extra overrides for the test, locked params, unlocked params)
    "seed/vit-h-14-a": (
        "ViT-H-14",
        ["train.precision=fp32", "model.lock_text=true", "model.cache_text_features=false"],
        ["token_embedding.weight"],
        [
            "visual.conv1.weight",
            "visual.transformer.resblocks.0.mlp.c_fc.weight",
            "visual.proj",
            "text_projection",
        ],
    ),
    "seed/vit-h-14-b": (
        "ViT-H-14",
        [],
        ["visual.conv1.weight", "visual.transformer.resblocks.27.mlp.c_fc.weight"],
        ["visual.transformer.resblocks.28.mlp.c_fc.weight", "visual.proj", "token_embedding.weight"],
    ),
    "seed/xlm-roberta-large-vit-h-14": (
        "xlm-roberta-large-ViT-H-14",
        ["model.lock_text=true", "model.unlocked_text_layers=1"],
        ["visual.conv1.weight", "text.transformer.encoder.layer.22.output.dense.weight"],
        [
            "visual.transformer.resblocks.31.attn.out_proj.weight",
            "text.transformer.encoder.layer.23.output.dense.weight",
        ],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(CASES))
def test_seed_config_takes_one_step(config, tmp_path) -> None:
    name, extra, locked, unlocked = CASES[config]
    cfg = load_config(config, ["model.pretrained=null", "train.device=cpu", "train.batch_size=2", *extra])
    assert cfg.model.name == name and cfg.loss.truncate_ratio == pytest.approx(0.05)
    torch.manual_seed(0)
    task = ClipTask(offline_clip(name, tmp_path, cfg.data.transform), cfg, torch.device("cpu"))
    stepper = Stepper(task, cfg, torch.device("cpu"), DistInfo(), total_steps=10)
    params = dict(task.module.named_parameters())
    before = {k: params[k].detach().clone() for k in locked + unlocked}
    lines = ["a.jpg$white Audi.$This is a white Audi.", "b.jpg$red BMW.$This is a red BMW."]
    records = [parse_line(x, path=Path("labels"), line=i + 1) for i, x in enumerate(lines)]
    size = task.preprocess.image_size
    batch = Batch(torch.randn(2, 3, size, size), [r.text for r in records], records, torch.tensor([0, 1]))
    logged = stepper.step(batch, 0)
    assert math.isfinite(logged["loss"])
    for key in locked:
        assert not params[key].requires_grad and torch.equal(params[key], before[key]), key
    for key in unlocked:
        assert params[key].requires_grad and not torch.equal(params[key], before[key]), key
    del task, stepper, params, before
    gc.collect()
