"""BLIP as a TrainTask: steps lower the loss, locks hold, the temperature is clamped, checkpoints round-trip
through `load_model`, positives follow `loss.targets`, and the gathered (2-rank) loss equals one process's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trafficsearch.data.labels import parse_line
from trafficsearch.errors import ConfigError
from trafficsearch.models import load_model
from trafficsearch.models.bert_tokenizer import pre_caption
from trafficsearch.models.blip import TEMP_MAX, TEMP_MIN, BlipRetrieval, create_blip
from trafficsearch.train.blip_task import BlipTask
from trafficsearch.train.config import config_from_dict
from trafficsearch.train.dist import DistInfo
from trafficsearch.train.task import Batch

torch.set_num_threads(1)  # 2 busy shared cores: a second thread mostly spins
SOLO = DistInfo()
LINES = [
    "a.jpg$white Audi.$This is a white Audi.",
    "b.jpg$white Audi.$A white Audi.",
    "c.jpg$red BMW.$A red BMW.",
    "d.jpg$1,0,1,0,0,0,1,0,0,0,1,0,0,1,0,0,0,0,0,0,0$A female pedestrian with a shoulderbag.",
    "e.jpg$1,0,1,0,0,0,1,0,0,0,0,0,0,1,0,0,0,0,0,0,0$A female pedestrian.",
    "f.jpg$0,0,1,0,0,0,1,0,0,0,0,0,0,1,0,0,0,0,0,0,0$A male pedestrian.",
]
RECORDS = [parse_line(line, path=Path("t.txt"), line=i + 1) for i, line in enumerate(LINES)]


def _cfg(**model):
    model = {"family": "blip", "name": "blip-tiny", "lock_text": False, **model}
    return config_from_dict({"model": model, "data": {"transform": "pad"}, "train": {"seed": 0}})


def _batch(n: int = 6, ids: list[int] | None = None, seed: int = 1) -> Batch:
    pixels = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    records = [RECORDS[i % len(RECORDS)] for i in range(n)]
    return Batch(
        pixels=pixels,
        texts=[r.text for r in records],
        records=records,
        image_ids=torch.tensor(ids if ids is not None else list(range(n))),
    )


def _step(task: BlipTask, batch: Batch, opt: torch.optim.Optimizer, step: int = 0) -> dict[str, float]:
    task.train_mode()
    out = task.loss(batch, step, SOLO)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    opt.step()
    task.after_step()
    return {k: float(v.detach()) for k, v in out.items()}


def test_three_steps_on_a_repeated_batch_lower_a_finite_loss() -> None:
    torch.manual_seed(0)
    task = BlipTask.create(_cfg(), "cpu")
    opt = torch.optim.AdamW(task.param_groups(0.01), lr=3e-3)
    batch = _batch()
    losses = [_step(task, batch, opt, s) for s in range(3)]
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in losses)
    assert set(losses[0]) >= {"loss", "itc", "itm", "temp"}
    assert losses[2]["loss"] < losses[0]["loss"]
    assert losses[2]["itc"] < losses[0]["itc"]


def test_locked_parameters_stay_bit_identical_after_a_step() -> None:
    task = BlipTask.create(_cfg(lock_image=True, unlocked_image_groups=1, lock_text=True), "cpu")
    m = task.model
    before = {k: v.detach().clone() for k, v in m.named_parameters()}
    opt = torch.optim.AdamW(task.param_groups(0.01), lr=1e-2)
    _step(task, _batch(), opt)
    after = dict(m.named_parameters())
    frozen = {k for k, p in after.items() if not p.requires_grad}
    changed = {k for k in after if not torch.equal(before[k], after[k].detach())}
    assert frozen and not (frozen & changed)
    # what the lock leaves trainable: last ViT layer + post-norm, the heads, cross-attention
    assert any(k.startswith("hf.vision_model.encoder.layers.1.") for k in changed)
    assert any(k.startswith("hf.vision_model.post_layernorm.") for k in changed)
    assert any(".crossattention." in k for k in changed)
    assert {"hf.vision_proj.weight", "hf.text_proj.weight", "hf.itm_head.weight"} <= changed
    for name in (
        "hf.vision_model.embeddings.patch_embedding.weight",
        "hf.vision_model.encoder.layers.0.mlp.fc1.weight",
        "hf.text_encoder.embeddings.word_embeddings.weight",
        "hf.text_encoder.encoder.layer.1.attention.self.query.weight",
        "hf.text_encoder.encoder.layer.1.intermediate.dense.weight",
    ):
        assert name in frozen
    # frozen parts stay in eval mode while the rest trains
    task.train_mode()
    assert m.training and not m.hf.vision_model.embeddings.training
    assert m.hf.text_encoder.encoder.layer[1].crossattention.training


def test_unlocked_text_layers_and_bad_counts() -> None:
    task = BlipTask.create(_cfg(lock_text=True, unlocked_text_layers=1), "cpu")
    layers = task.model.hf.text_encoder.encoder.layer
    assert all(p.requires_grad for p in layers[1].parameters())
    assert not any(p.requires_grad for p in layers[0].attention.parameters())
    with pytest.raises(ConfigError, match="unlocked_image_groups"):
        BlipTask.create(_cfg(lock_image=True, unlocked_image_groups=3), "cpu")


def test_temperature_is_clamped_after_a_step_and_never_decayed() -> None:
    task = BlipTask.create(_cfg(), "cpu")
    groups = task.param_groups(0.05)
    no_decay = next(g for g in groups if g["weight_decay"] == 0.0)
    assert any(p is task.model.temp for p in no_decay["params"])
    decayed = next(g for g in groups if g["weight_decay"] == 0.05)
    assert any(p is task.model.hf.vision_proj.weight for p in decayed["params"])
    assert not any(p.ndim < 2 for p in decayed["params"])  # biases, norms stay undecayed
    with torch.no_grad():
        task.model.temp.fill_(3.0)
    task.after_step()
    assert task.model.temp.item() == pytest.approx(TEMP_MAX)
    with torch.no_grad():
        task.model.temp.fill_(-1.0)
    task.after_step()
    assert task.model.temp.item() == pytest.approx(TEMP_MIN)


def test_save_then_load_model_gives_identical_embeddings_and_itm(tmp_path: Path) -> None:
    task = BlipTask.create(_cfg(), "cpu")
    opt = torch.optim.AdamW(task.param_groups(0.01), lr=1e-2)
    _step(task, _batch(), opt)  # trained weights, not the seed's init
    task.save(tmp_path / "ckpt", "model:\n  family: blip\n")
    assert (tmp_path / "ckpt" / "config.yaml").read_text() == "model:\n  family: blip\n"
    loaded = load_model(tmp_path / "ckpt")
    assert isinstance(loaded, BlipRetrieval)
    pixels, texts = _batch().pixels, [r.text for r in RECORDS]
    src = task.retrieval_model()
    assert torch.equal(loaded.encode_images(pixels), src.encode_images(pixels))
    assert torch.equal(loaded.encode_texts(texts), src.encode_texts(texts))
    assert torch.equal(loaded.itm_scores(texts, pixels), src.itm_scores(texts, pixels))
    assert loaded.temp.item() == src.temp.item()
    # load_weights restores a trained state into a fresh task; a mismatched model is refused
    fresh = BlipTask.create(_cfg(), "cpu")
    fresh.load_weights(tmp_path / "ckpt")
    assert torch.equal(fresh.model.encode_texts(texts), src.encode_texts(texts))
    other = BlipTask.create(_cfg(name="blip-small"), "cpu")
    with pytest.raises(ConfigError, match="do not match"):
        other.load_weights(tmp_path / "ckpt")


def test_a_run_starts_from_a_checkpoint_dir_in_pretrained(tmp_path: Path) -> None:
    task = BlipTask.create(_cfg(), "cpu")
    with torch.no_grad():
        task.model.temp.fill_(0.2)
    task.save(tmp_path / "best", None)
    again = BlipTask.create(_cfg(pretrained=str(tmp_path / "best")), "cpu")
    assert again.model.temp.item() == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="model.pretrained"):
        BlipTask.create(_cfg(pretrained="laion2b_s32b_b79k"), "cpu")
    with pytest.raises(ConfigError, match="truncate_ratio"):
        BlipTask.create(
            config_from_dict({"model": {"family": "blip"}, "loss": {"truncate_ratio": 0.05}}), "cpu"
        )


def test_training_captions_are_cleaned_queries_are_not() -> None:
    task = BlipTask.create(_cfg(), "cpu")
    raw = ["This is a white (Audi)!"]
    tok = task._tokens(raw, SOLO)
    assert torch.equal(tok.input_ids, task.model.tokenizer([pre_caption(raw[0])]).input_ids)
    assert not torch.equal(tok.input_ids, task.model.tokenizer(raw).input_ids)


@pytest.mark.parametrize(
    ("targets", "pairs"),
    [
        ("one_to_one", {(0, 0)}),
        ("same_image", {(0, 0), (0, 1)}),  # ids [7, 7, ...]: pairs 0 and 1 are one image
        ("same_text", {(0, 0), (0, 1)}),
        ("equal", {(0, 0), (0, 1)}),  # two white Audis
    ],
)
def test_positives_follow_loss_targets(targets: str, pairs: set[tuple[int, int]]) -> None:
    cfg = config_from_dict({"model": {"family": "blip", "name": "blip-tiny"}, "loss": {"targets": targets}})
    task = BlipTask.create(cfg, "cpu")
    n = 6
    ids = [7, 7, 2, 3, 4, 5] if targets == "same_image" else list(range(n))
    batch = _batch(n, ids)
    if targets == "same_text":
        batch.texts[1] = batch.texts[0]
    i2t, t2i = task._positives(batch, batch.image_ids, batch.image_ids, SOLO)
    assert i2t.diagonal().all() and t2i.diagonal().all()
    assert {(0, j) for j in range(n) if i2t[0, j]} == pairs
    assert torch.equal(i2t, t2i.T)


def test_contain_positives_are_directed() -> None:
    """Image 3 (shoulderbag) answers text 4 ("a female pedestrian"), not the other way round."""
    cfg = config_from_dict({"model": {"family": "blip", "name": "blip-tiny"}, "loss": {"targets": "contain"}})
    task = BlipTask.create(cfg, "cpu")
    batch = _batch(6)
    i2t, t2i = task._positives(batch, batch.image_ids, batch.image_ids, SOLO)
    assert i2t[3, 4] and not i2t[4, 3]  # image -> text
    assert t2i[4, 3] and not t2i[3, 4]  # text 4 has image 3 as a positive
    assert not i2t[3, 5]  # a male caption never matches a female image


def test_hf_id_of_the_seed_model_takes_the_packaged_224px_preprocessing(monkeypatch) -> None:
    import trafficsearch.models.blip as blip

    seen = {}

    def fake(hf_id, **_):
        seen["id"] = hf_id
        return create_blip("blip-tiny").hf

    monkeypatch.setattr(blip, "_from_pretrained", fake)
    model = create_blip(blip.BLIP_LARGE_ID)
    assert seen["id"] == blip.BLIP_LARGE_ID and model.image_size == 224 and model.tokenizer.max_length == 100


# -- two ranks (gloo): the gathered loss is the global batch's -----------------------------------------------
def _rank(rank: int, world: int, port: int, out: str) -> None:
    import os

    import torch.distributed as tdist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = config_from_dict(
            {"model": {"family": "blip", "name": "blip-tiny"}, "loss": {"targets": "equal"}}
        )
        task = BlipTask.create(cfg, "cpu")
        full = _batch(6)
        half = slice(rank * 3, rank * 3 + 3)
        local = Batch(full.pixels[half], full.texts[half], full.records[half], full.image_ids[half])
        res = task.loss(local, 0, DistInfo(rank=rank, world_size=world))
        res["itc"].backward()
        grad = task.model.hf.vision_proj.weight.grad.clone()
        tdist.all_reduce(grad)
        torch.save(
            {"itc": float(res["itc"].detach()), "grad": grad / world, "finite": bool(res["loss"].isfinite())},
            out,
        )
    finally:
        tdist.destroy_process_group()


def test_two_rank_itc_and_gradients_match_one_process(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    files = [str(tmp_path / f"rank{r}.pt") for r in range(2)]
    ctx = mp.get_context("fork")  # the children reuse the parent's imports (spawn re-imports: +20 s)
    procs = [ctx.Process(target=_rank, args=(r, 2, port, files[r])) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs)
    ranks = [torch.load(f) for f in files]

    cfg = config_from_dict({"model": {"family": "blip", "name": "blip-tiny"}, "loss": {"targets": "equal"}})
    task = BlipTask.create(cfg, "cpu")
    res = task.loss(_batch(6), 0, SOLO)
    res["itc"].backward()
    assert all(r["finite"] for r in ranks)
    assert sum(r["itc"] for r in ranks) / 2 == pytest.approx(float(res["itc"].detach()), rel=1e-5)
    assert torch.allclose(ranks[0]["grad"], task.model.hf.vision_proj.weight.grad, rtol=1e-4, atol=1e-6)


# -- through the one loop -----------------------------------------------------------------------------------
def _loop_cfg(data: Path, **train):
    return config_from_dict(
        {
            "model": {"family": "blip", "name": "blip-tiny", "lock_text": False},
            "data": {"root": str(data), "transform": "pad", "workers": 0, "randaugment": {"n": 2}},
            "optim": {"lr": 2e-3, "weight_decay": 0.005, "warmup_steps": 0},
            "train": {
                "epochs": 2,
                "batch_size": 4,
                "device": "cpu",
                "precision": "fp32",
                "threads": 1,
                "log_every": 1,
                "save_every": 2,
                **train,
            },
        }
    )


def test_train_runs_blip_end_to_end_and_resumes_exactly(tmp_path: Path, tiny_data: Path) -> None:
    import json

    from safetensors.torch import load_file

    from trafficsearch.train.loop import train

    data = tiny_data
    full = train(_loop_cfg(data), tmp_path / "full", show_progress=False)
    assert full.finished and full.step == 6 and full.best_map is not None
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["type"] == "train"]
    assert len(steps) == 6 and all({"itc", "itm", "temp"} <= set(r) for r in steps)
    assert all(TEMP_MIN <= r["temp"] <= TEMP_MAX for r in steps)
    assert sum(r["type"] == "val" for r in rows) == 2
    best = load_model(tmp_path / "full" / "best")
    assert isinstance(best, BlipRetrieval) and best.manifest()["family"] == "blip"

    cut = train(_loop_cfg(data, max_steps=4), tmp_path / "cut", show_progress=False)
    assert not cut.finished and cut.step == 4
    resumed = train(_loop_cfg(data), tmp_path / "cut", resume=True, show_progress=False)
    assert resumed.finished and resumed.step == 6
    a = load_file(str(tmp_path / "full" / "last" / "weights.safetensors"))
    b = load_file(str(tmp_path / "cut" / "last" / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_demo_config_builds_its_task() -> None:
    from trafficsearch.train.config import load_config

    cfg = load_config("demo/blip-small")
    task = BlipTask.create(cfg, "cpu")  # from the shipped package:blip-small
    assert task.model.name == "blip-small-minilm3" and task.preprocess.image_size == 64
    trainable = {n for n, p in task.module.named_parameters() if p.requires_grad}
    vit = task.model.hf.vision_model.encoder.layers
    assert all(p.requires_grad for p in vit[-1].parameters()) and not any(
        p.requires_grad for p in vit[0].parameters()
    )
    assert any("crossattention" in n for n in trainable) and "temp" in trainable
    assert not any(".attention.self." in n and "text_encoder" in n for n in trainable)
