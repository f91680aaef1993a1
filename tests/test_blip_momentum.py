"""BLIP's momentum distillation + ITC queue (loss.queue_size / momentum / alpha): the loss against
hand-computed references, the EMA, the queue's pointer wrap, image-id positives in the queue, config
errors, exact resume through the loop, and 2 gloo ranks equal to one process."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trafficsearch.errors import ConfigError
from trafficsearch.train.blip_loss import DistillTargets, distilled_itc
from trafficsearch.train.blip_momentum import EMPTY_ID, FeatureQueue, MomentumEncoders
from trafficsearch.train.blip_task import BlipTask
from trafficsearch.train.config import config_from_dict, load_config
from trafficsearch.train.dist import DistInfo
from trafficsearch.train.task import Batch

torch.set_num_threads(1)
SOLO = DistInfo()
TEXTS = ["a red car.", "a blue van.", "a green truck.", "a man in black.", "a woman with a bag.", "a bus."]


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def _bank(img_m, txt_m, queue_img, queue_txt, pos, alpha) -> DistillTargets:
    return DistillTargets(
        image_feat_m=img_m,
        text_feat_m=txt_m,
        image_all=torch.cat([img_m, queue_img]),
        text_all=torch.cat([txt_m, queue_txt]),
        pos_i2t=pos,
        pos_t2i=pos,
        alpha=alpha,
    )


def _reference(rows: torch.Tensor, cols: torch.Tensor, targets: list[list[float]], temp: float) -> float:
    """Mean over rows of -sum_j t_ij log softmax_j(rows_i . cols_j / temp), in plain Python floats."""
    total = 0.0
    for i, row in enumerate(rows.tolist()):
        logits = [sum(a * b for a, b in zip(row, col, strict=True)) / temp for col in cols.tolist()]
        top = max(logits)
        lse = top + math.log(sum(math.exp(x - top) for x in logits))
        total += -sum(t * (x - lse) for t, x in zip(targets[i], logits, strict=True))
    return total / len(targets)


# -- the loss -----------------------------------------------------------------------------------------------
def test_alpha_zero_is_hard_targets_over_batch_and_a_zero_queue() -> None:
    """alpha 0: one-hot (here: same-image) targets over [batch; queue]; a queue of zeros adds logits of 0."""
    img, txt = _unit(3, 4, 0), _unit(3, 4, 1)
    zeros = torch.zeros(2, 4)
    # pairs 0 and 1 are one image
    pos = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0]], dtype=torch.bool)
    temp = torch.tensor(0.1)
    got = distilled_itc(img, txt, temp, _bank(img, txt, zeros, zeros, pos, alpha=0.0))
    targets = [[0.5, 0.5, 0, 0, 0], [0.5, 0.5, 0, 0, 0], [0, 0, 1, 0, 0]]
    cols_t, cols_i = torch.cat([txt, zeros]), torch.cat([img, zeros])
    want = (_reference(img, cols_t, targets, 0.1) + _reference(txt, cols_i, targets, 0.1)) / 2
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_alpha_one_with_the_online_model_as_momentum_is_the_softmax_entropy() -> None:
    """alpha 1 and momentum == online: targets are the model's own softmax, so each row's loss is its
    entropy; the queue's known features enter as columns."""
    img, txt, q_img, q_txt = _unit(3, 4, 2), _unit(3, 4, 3), _unit(2, 4, 4), _unit(2, 4, 5)
    pos = torch.eye(3, 5, dtype=torch.bool)
    temp = torch.tensor(0.2)
    bank = _bank(img, txt, q_img, q_txt, pos, alpha=1.0)
    got = distilled_itc(img, txt, temp, bank)

    def entropy(rows, cols) -> float:
        p = F.softmax(rows.double() @ cols.double().T / 0.2, dim=1)
        return float(-(p * p.log()).sum(dim=1).mean())

    want = (entropy(img, bank.text_all) + entropy(txt, bank.image_all)) / 2
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_targets_mix_the_momentum_softmax_and_the_positives_by_alpha() -> None:
    img, txt = _unit(2, 3, 6), _unit(2, 3, 7)
    img_m, txt_m = _unit(2, 3, 8), _unit(2, 3, 9)  # a momentum model that differs from the online one
    q_img, q_txt = _unit(1, 3, 10), _unit(1, 3, 11)
    pos = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)  # row 0's image id is in the queue
    bank = _bank(img_m, txt_m, q_img, q_txt, pos, alpha=0.4)
    got = distilled_itc(img, txt, torch.tensor(0.5), bank)
    hard = [[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]]

    def targets(rows_m, cols) -> list[list[float]]:
        soft = F.softmax(rows_m.double() @ cols.double().T / 0.5, dim=1).tolist()
        return [
            [0.4 * s + 0.6 * h for s, h in zip(srow, hrow, strict=True)]
            for srow, hrow in zip(soft, hard, strict=True)
        ]

    want = (
        _reference(img, bank.text_all, targets(img_m, bank.text_all), 0.5)
        + _reference(txt, bank.image_all, targets(txt_m, bank.image_all), 0.5)
    ) / 2
    assert float(got) == pytest.approx(want, rel=1e-6)
    # gradients reach the online features only (the bank is the momentum model's)
    img.requires_grad_(True)
    distilled_itc(img, txt, torch.tensor(0.5), bank).backward()
    assert img.grad is not None and bool(img.grad.abs().sum() > 0)


# -- the queue ----------------------------------------------------------------------------------------------
def _sequential(size: int, batches: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Oracle: every row written one at a time at the pointer, which then moves on by one (mod size)."""
    feats, ids, ptr, row = torch.zeros(size, 2), torch.full((size,), EMPTY_ID), 0, 0
    for n in batches:
        for _ in range(n):
            feats[ptr], ids[ptr] = float(row), row
            ptr, row = (ptr + 1) % size, row + 1
    return feats, ids, ptr


@pytest.mark.parametrize("batches", [[3, 3], [2, 2, 2], [3, 3, 7], [5, 1, 4, 9], [12]])
def test_enqueue_wraps_the_pointer_like_one_row_at_a_time(batches: list[int]) -> None:
    queue = FeatureQueue(5, 2, seed=0)
    row = 0
    for n in batches:
        values = torch.arange(row, row + n, dtype=torch.float32)
        queue.enqueue(values[:, None].repeat(1, 2), -values[:, None].repeat(1, 2), values.long())
        row += n
    feats, ids, ptr = _sequential(5, batches)
    assert queue.ptr == ptr
    assert torch.equal(queue.ids, ids)
    written = ids != EMPTY_ID
    assert torch.equal(queue.image[written], feats[written])
    assert torch.equal(queue.text[written], -feats[written])


def test_a_new_queue_is_random_unit_vectors_that_match_no_id() -> None:
    a, b = FeatureQueue(7, 4, seed=3), FeatureQueue(7, 4, seed=3)
    torch.testing.assert_close(a.image.norm(dim=1), torch.ones(7))
    assert torch.equal(a.image, b.image) and not torch.equal(a.image, a.text)  # seeded, two draws
    assert bool((a.ids == EMPTY_ID).all()) and a.ptr == 0
    state = torch.get_rng_state()
    FeatureQueue(7, 4, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG stream is untouched


# -- the momentum encoders --------------------------------------------------------------------------------
def _task(queue_size: int = 4, **model) -> BlipTask:
    cfg = config_from_dict(
        {
            "model": {"family": "blip", "name": "blip-tiny", "lock_text": False, **model},
            "loss": {"queue_size": queue_size, "momentum": 0.5, "alpha": 0.4, "targets": "same_image"},
        }
    )
    return BlipTask.create(cfg, "cpu")


def test_ema_follows_the_formula_for_trainable_encoder_weights_only() -> None:
    task = _task(lock_image=True, unlocked_image_groups=1)
    model = task.model
    enc = MomentumEncoders(model)
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    enc.update(0.9)
    online, shadow = dict(model.named_parameters()), dict(enc.model.named_parameters())
    trainable = {n for n, p in online.items() if p.requires_grad}
    for name, p in shadow.items():
        assert not p.requires_grad
        if name in trainable and not name.startswith(("hf.itm_head.", "temp")):
            torch.testing.assert_close(p, 0.9 * before[name] + 0.1 * online[name].detach(), msg=name)
        else:  # frozen weights, the ITM head and the temperature: not BLIP's model pairs
            assert torch.equal(p, before[name]), name
    assert "hf.vision_model.embeddings.patch_embedding.weight" not in trainable
    assert {"hf.vision_proj.weight", "hf.text_encoder.encoder.layer.0.output.dense.weight"} <= trainable
    assert enc.model.tokenizer is model.tokenizer  # shared, not copied
    task.train_mode()
    enc.mirror_modes(model)
    assert enc.model.training and not enc.model.hf.vision_model.embeddings.training


def _batch(n: int, ids: list[int], seed: int) -> Batch:
    pixels = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    texts = [TEXTS[(seed + i) % len(TEXTS)] for i in range(n)]
    return Batch(pixels=pixels, texts=texts, records=[], image_ids=torch.tensor(ids))


def test_queue_positives_are_earlier_pairs_of_the_same_image() -> None:
    task = _task(queue_size=8)
    task.train_mode()
    first = task.loss(_batch(3, [10, 11, 12], seed=0), 0, SOLO)
    assert set(first) >= {"loss", "itc", "itm", "alpha"}
    q = task.distiller.queue
    assert q.ptr == 3 and q.ids[:3].tolist() == [10, 11, 12]
    second = _batch(3, [12, 13, 13], seed=1)
    tok = task._tokens(second.texts, SOLO)
    same = second.image_ids[:, None] == second.image_ids[None, :]
    bank = task.distiller.step_targets(
        task.model, second.pixels, tok, second.image_ids, second.image_ids, (same, same), 5, SOLO
    )
    # columns: the batch (3), then the queue (8): image 12 is in slot 2 of the queue; 13 twice in the batch
    assert bank.pos_i2t.shape == (3, 11)
    assert bank.pos_i2t[0].nonzero().flatten().tolist() == [0, 3 + 2]
    for row in (1, 2):
        assert bank.pos_i2t[row].nonzero().flatten().tolist() == [1, 2]
    # the queue columns are the momentum features enqueued by the first call
    image_m, _ = task.distiller.encoders.features(_batch(3, [10, 11, 12], seed=0).pixels, tok)
    torch.testing.assert_close(bank.image_all[3:6], image_m, rtol=1e-5, atol=1e-6)


def test_off_by_default_and_on_in_the_seed_config() -> None:
    tiny = config_from_dict({"model": {"family": "blip", "name": "blip-tiny"}})
    assert tiny.loss.queue_size == 0
    task = BlipTask.create(tiny, "cpu")
    assert task.distiller is None and task.train_state() == {}
    for name in ("demo/blip-small", "demo/tiny-test"):
        assert load_config(name).loss.queue_size == 0
    seed = load_config("seed/blip-large")
    assert (seed.loss.queue_size, seed.loss.momentum, seed.loss.alpha) == (57600, 0.995, 0.4)
    # ITM negatives: all hard in the seed (BLIP's), half uniform in the CPU demo's pre-training + fine-tune
    assert seed.loss.itm_hard_share == 1.0
    for name in ("demo/blip-small", "pretrain/blip-small"):
        assert load_config(name).loss.itm_hard_share == 0.5
    half = config_from_dict(
        {"model": {"family": "blip", "name": "blip-tiny"}, "loss": {"itm_hard_share": 0.5}}
    )
    assert BlipTask.create(half, "cpu").itm_hard_share == 0.5


@pytest.mark.parametrize(
    ("family", "loss", "field"),
    [
        ("blip", {"queue_size": -1}, "loss.queue_size"),
        ("blip", {"alpha": 1.5}, "loss.alpha"),
        ("blip", {"alpha": -0.1}, "loss.alpha"),
        ("blip", {"momentum": 1.01}, "loss.momentum"),
        ("blip", {"queue_size": 8, "targets": "equal"}, "loss.targets"),  # the queue keeps image ids only
        ("clip", {"queue_size": 8}, "loss.queue_size"),  # CLIP has no momentum encoders
        ("blip", {"itm_hard_share": 1.2}, "loss.itm_hard_share"),
        ("clip", {"itm_hard_share": 0.5}, "loss.itm_hard_share"),  # CLIP has no ITM
    ],
)
def test_bad_momentum_settings_name_the_field(family: str, loss: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"model": {"family": family}, "loss": loss})
    assert err.value.field == field
    line = err.value.one_line()
    assert field in line and "\n" not in line


# -- through the loop: exact resume, the exported checkpoint -----------------------------------------------
def _loop_cfg(data: Path, **train):
    return config_from_dict(
        {
            "model": {"family": "blip", "name": "blip-tiny", "lock_text": False},
            "data": {"root": str(data), "transform": "pad", "workers": 0, "randaugment": {"n": 2}},
            "optim": {"lr": 2e-3, "weight_decay": 0.005, "warmup_steps": 0},
            # 6 entries: the global batch of 4 does not divide it, the pointer wraps mid-batch
            "loss": {"queue_size": 6, "momentum": 0.9, "alpha": 0.4, "targets": "same_image"},
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


class Interrupt(Exception):
    pass


def test_resume_with_the_queue_on_is_exact(tmp_path: Path, tiny_data: Path) -> None:
    import json

    from safetensors.torch import load_file

    from trafficsearch.models import load_model
    from trafficsearch.models.blip import BlipRetrieval
    from trafficsearch.train.loop import STATE_FILE, train

    full = train(_loop_cfg(tiny_data), tmp_path / "full", show_progress=False)
    assert full.finished and full.step == 6  # 12 images / 4 = 3 steps per epoch

    def cut(step: int) -> None:
        if step == 5:  # last/ holds step 4; step 5 is redone after the resume
            raise Interrupt

    with pytest.raises(Interrupt):
        train(_loop_cfg(tiny_data), tmp_path / "cut", show_progress=False, on_step=cut)
    resumed = train(_loop_cfg(tiny_data), tmp_path / "cut", resume=True, show_progress=False)
    assert resumed.finished and resumed.step == 6
    a = load_file(str(tmp_path / "full" / "last" / "weights.safetensors"))
    b = load_file(str(tmp_path / "cut" / "last" / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(tmp_path / "full" / "last" / STATE_FILE, weights_only=False)["task"]["momentum"]
    sb = torch.load(tmp_path / "cut" / "last" / STATE_FILE, weights_only=False)["task"]["momentum"]
    assert sa["queue"]["ptr"] == sb["queue"]["ptr"] == (6 * 4) % 6
    for key in ("image", "text", "ids"):
        assert torch.equal(sa["queue"][key], sb["queue"][key]), key
    assert all(torch.equal(sa["encoders"][k], sb["encoders"][k]) for k in sa["encoders"])
    # the momentum copy moved away from the online weights (EMA), and the queue holds real image ids
    assert not torch.equal(sa["encoders"]["hf.vision_proj.weight"], a["hf.vision_proj.weight"])
    assert bool((sa["queue"]["ids"] >= 0).all())

    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    alphas = [r["alpha"] for r in rows if r["type"] == "train"]
    assert alphas == pytest.approx([0.0, 0.4 / 3, 0.8 / 3, 0.4, 0.4, 0.4])  # BLIP's ramp over epoch 1
    losses = [r["loss"] for r in rows if r["type"] == "train"]
    cut_rows = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in cut_rows if r["type"] == "train"] == losses

    # the exported checkpoint holds the online model only and loads as any BLIP checkpoint
    best = tmp_path / "full" / "best"
    assert set(load_file(str(best / "weights.safetensors"))) == set(a)
    assert not (best / STATE_FILE).exists()
    assert isinstance(load_model(best), BlipRetrieval)


# -- two ranks (gloo) equal one process --------------------------------------------------------------------
STEPS = 3


def _train_steps(rank: int, world: int) -> dict:
    """STEPS steps on this rank's slice of global batches of 6 (ITC only: ITM draws its hard negatives from
    each rank's own RNG); SGD, gradients averaged over ranks as the loop's reducer does."""
    import torch.distributed as tdist

    torch.manual_seed(0)
    task = _task(queue_size=4)  # 6 rows per step into 4 slots: wraps every step
    opt = torch.optim.SGD([p for p in task.module.parameters() if p.requires_grad], lr=0.5)
    info = DistInfo(rank=rank, world_size=world)
    itc = []
    for step in range(STEPS):
        full = _batch(6, [7 * step + i // 2 for i in range(6)], seed=step)  # pairs of one image
        part = slice(rank * 6 // world, (rank + 1) * 6 // world)
        local = Batch(full.pixels[part], full.texts[part], [], full.image_ids[part])
        task.train_mode()
        opt.zero_grad(set_to_none=True)
        out = task.loss(local, step, info)
        out["itc"].backward()
        if info.distributed:
            for p in task.module.parameters():
                if p.grad is not None:
                    tdist.all_reduce(p.grad)
                    p.grad /= world
        opt.step()
        task.after_step()
        value = out["itc"].detach().clone()
        if info.distributed:
            tdist.all_reduce(value)
            value /= world
        itc.append(float(value))
    state = task.train_state()["momentum"]
    return {
        "itc": itc,
        "online": {k: v.detach().clone() for k, v in task.model.state_dict().items()},
        "momentum": {k: v.clone() for k, v in state["encoders"].items()},
        "queue": {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in state["queue"].items()},
    }


def _rank(rank: int, world: int, port: int, out: str) -> None:
    import os

    import torch.distributed as tdist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(_train_steps(rank, world), out)
    finally:
        tdist.destroy_process_group()


def test_two_gloo_ranks_fill_the_queue_and_train_as_one_process(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    files = [str(tmp_path / f"rank{r}.pt") for r in range(2)]
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_rank, args=(r, 2, port, files[r])) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert all(p.exitcode == 0 for p in procs)
    ranks = [torch.load(f, weights_only=False) for f in files]
    single = _train_steps(0, 1)

    assert ranks[0]["itc"] == pytest.approx(single["itc"], rel=1e-5)
    assert single["queue"]["ptr"] == ranks[0]["queue"]["ptr"] == ranks[1]["queue"]["ptr"] == (STEPS * 6) % 4
    for r in ranks:
        assert torch.equal(r["queue"]["ids"], single["queue"]["ids"])  # rank order = the global batch's
        torch.testing.assert_close(r["queue"]["image"], single["queue"]["image"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(r["queue"]["text"], single["queue"]["text"], rtol=1e-4, atol=1e-5)
        for key in ("hf.vision_proj.weight", "hf.text_proj.weight", "hf.vision_model.post_layernorm.weight"):
            torch.testing.assert_close(r["online"][key], single["online"][key], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(r["momentum"][key], single["momentum"][key], rtol=1e-4, atol=1e-5)
    key = "hf.vision_proj.weight"
    assert not torch.equal(single["momentum"][key], single["online"][key])  # the EMA lags
