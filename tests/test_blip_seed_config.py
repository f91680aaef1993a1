"""configs/seed/blip-large.yaml builds BLIP-large's architecture (random weights from a local BlipConfig, no
download) and takes one training step of the seed's optimiser at batch 2 on CPU (~470M parameters, ~8 GB
with AdamW's state: freed at the end)."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import torch

from trafficsearch.data.labels import parse_line
from trafficsearch.models.blip import BLIP_LARGE_ARCHITECTURE, BLIP_LARGE_ID
from trafficsearch.train.config import load_config
from trafficsearch.train.dist import DistInfo
from trafficsearch.train.task import Batch

LINES = [
    "a.jpg$white Audi.$This is a white Audi.",
    "b.jpg$1,0,1,0,0,0,1,0,0,0,1,0,0,1,0,0,0,0,0,0,0$A female pedestrian with a shoulderbag.",
]


def test_seed_config_holds_the_seed_values() -> None:
    cfg = load_config("seed/blip-large")
    assert (cfg.model.family, cfg.model.name) == ("blip", BLIP_LARGE_ID)
    assert not cfg.model.lock_image and not cfg.model.lock_text
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.warmup_steps) == (5e-6, 0.005, 0)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.precision) == (3, 96, "fp32")
    assert cfg.data.randaugment is not None and (cfg.data.randaugment.n, cfg.data.randaugment.magnitude) == (
        2,
        5,
    )
    assert cfg.data.transform == "pad" and cfg.data.crop_scale is None
    assert cfg.loss.truncate_ratio == 0.0
    assert (cfg.loss.queue_size, cfg.loss.momentum, cfg.loss.alpha) == (57600, 0.995, 0.4)  # BLIP's MoD


@pytest.mark.slow
def test_blip_large_architecture_takes_one_seed_step(tmp_path: Path) -> None:
    from trafficsearch.train.blip_task import BlipTask
    from trafficsearch.train.loop import Stepper

    torch.set_num_threads(2)
    arch = tmp_path / "blip-large-random.json"
    arch.write_text(
        json.dumps(
            {
                "blip_config": BLIP_LARGE_ARCHITECTURE,
                "preprocess": {"kind": "pad", "image_size": 224},
                "tokenizer": {"source": "@minilm", "max_length": 100},
            }
        )
    )
    # no momentum copy (a second set of ~470M weights) on this shared CPU: test_blip_momentum.py covers MoD
    overrides = [f"model.name={arch}", "train.device=cpu", "train.batch_size=2", "loss.queue_size=0"]
    cfg = load_config("seed/blip-large", overrides)
    task = BlipTask.create(cfg, torch.device("cpu"))
    try:
        m = task.model
        n_params = sum(p.numel() for p in m.parameters())
        assert 440e6 < n_params < 500e6
        assert all(p.requires_grad for p in m.parameters())  # the seed fine-tunes everything
        assert m.image_size == 224 and m.tokenizer.max_length == 100
        assert len(m.hf.vision_model.encoder.layers) == 24 and m.hf.text_encoder.config.hidden_size == 768
        watch = {
            "vit0": m.hf.vision_model.encoder.layers[0].mlp.fc1.weight,
            "text11": m.hf.text_encoder.encoder.layer[11].output.dense.weight,
            "itm": m.hf.itm_head.weight,
        }
        before = {k: v.detach()[:8].clone() for k, v in watch.items()}
        stepper = Stepper(task, cfg, torch.device("cpu"), DistInfo(), total_steps=10)
        records = [parse_line(line, path=Path("t.txt"), line=i + 1) for i, line in enumerate(LINES)]
        batch = Batch(
            pixels=torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)),
            texts=[r.text for r in records],
            records=records,
            image_ids=torch.tensor([0, 1]),
        )
        task.train_mode()
        logged = stepper.step(batch, 0)
        assert all(torch.isfinite(torch.as_tensor(v)) for v in logged.values())
        assert {"loss", "itc", "itm"} <= set(logged)
        # every tensor gets a gradient (random cross-attention keys get ~1e-15: too small to move the weights
        # through AdamW's eps of 1e-8, so the check is on gradients, and on weights only where they are large)
        silent = [n for n, p in m.named_parameters() if p.grad is None or not bool(p.grad.any())]
        assert not silent
        for key, tensor in watch.items():
            assert not torch.equal(before[key], tensor.detach()[:8]), key
        group = stepper.optimizer.param_groups[0]
        assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8
    finally:
        del task
        gc.collect()
