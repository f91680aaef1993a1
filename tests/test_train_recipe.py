"""The seed recipe's switches wired into the one loop: prompt pairs, targets + truncation, partial
fine-tuning locks, and exact resume with augmentation and prompts on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trafficsearch.data.dataset import make_pairs
from trafficsearch.data.labels import parse_line
from trafficsearch.testing.datasets import TINY_CONFIG
from trafficsearch.train.config import load_config
from trafficsearch.train.contrastive import contrastive_loss
from trafficsearch.train.dist import DistInfo
from trafficsearch.train.loop import train
from trafficsearch.train.loss import ContrastiveLoss, pair_targets

torch.set_num_threads(1)
PED = (
    "p1.jpg$1,0,1,0,1,0,0,1,1,0,0,0,0,1,0,0,0,0,0,0,0$A walking woman who is between 18 and 60. "
    "She is wearing a hat."
)
CAR = "c1.jpg$white Audi.$This is a white Audi."
AUG = ["data.crop_scale=[0.9,1.0]", "data.randaugment={n: 2, magnitude: 5, prob: 0.5}"]


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def data(tiny_data):
    return tiny_data


def _cfg(data, *extra: str):
    return load_config(TINY_CONFIG, [f"data.root={data}", *extra])


def _rows(run: Path, kind: str = "train") -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


def test_prompt_pairs_keep_the_original_and_share_image_ids() -> None:
    records = [parse_line(line, path=Path("x"), line=i + 1) for i, line in enumerate([CAR, PED])]
    plain = make_pairs(records)
    assert plain.texts == [CAR.split("$")[2], PED.split("$")[2]] and plain.image_of == [0, 1]
    pairs = make_pairs(records, vehicles=True, pedestrians=True, vehicle_form="pairs")
    assert len(pairs.images) == 2
    assert pairs.texts[0] == "This is a white Audi." and len(pairs) == 3 + 3  # car: 1 + 2 prompts, ped: 1 + 2
    assert pairs.image_of == [0, 0, 0, 1, 1, 1]
    assert pairs.texts[3] == PED.split("$")[2]  # the original first, never replaced
    assert make_pairs(records, vehicles=True, vehicle_form="pairs").image_of == [0, 0, 0, 1]
    same_image = pair_targets("same_image", pairs.records, pairs.texts, pairs.image_of)
    assert same_image[0, 2] and same_image[3, 5] and not same_image[0, 3]
    in_place = make_pairs(records, vehicles=True, pedestrians=True)  # the seed's form: one car text
    assert in_place.image_of == [0, 1, 1, 1]
    assert in_place.texts[0].startswith("This is a white Audi. This is a vehicle. The brand")


def test_same_text_targets_are_the_former_multi_positive_loss() -> None:
    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    texts = ["a", "b", "a", "c", "b", "d"]
    out = ContrastiveLoss("same_text")(img, txt, torch.tensor(10.0), step=0, dist=DistInfo(), texts=texts)
    labels = torch.tensor([0, 1, 0, 2, 1, 3])
    target = (labels[:, None] == labels[None, :]).float()
    target = target / target.sum(1, keepdim=True)
    logits = 10.0 * img @ txt.T
    ref = (
        -(target * logits.log_softmax(1)).sum(1).mean() / 2
        - (target * logits.T.log_softmax(1)).sum(1).mean() / 2
    )
    torch.testing.assert_close(out["loss"], ref)
    # truncation starts at its step: before it all 6 pairs count, from it the worst 1 of 6 is dropped
    loss = ContrastiveLoss("one_to_one", truncate_ratio=0.2, truncate_start_step=5)
    early, late = (loss(img, txt, torch.tensor(10.0), step=s, dist=DistInfo()) for s in (4, 5))
    assert float(early["kept"]) == 6 and float(late["kept"]) == 4  # int(6 * 0.8) = 4, the seed's rule
    full, per_pair = contrastive_loss(img, txt, torch.tensor(10.0))
    torch.testing.assert_close(early["loss"], full)
    torch.testing.assert_close(late["loss"], per_pair.sort().values[:4].mean() / 2)


def test_loop_logs_truncation_over_the_batch(tmp_path, data) -> None:
    run = train(
        _cfg(data, "train.epochs=1", "loss.truncate_ratio=0.25", "loss.truncate_start_step=1"),
        tmp_path / "r",
        show_progress=False,
    ).run_dir
    assert [r["kept"] for r in _rows(run)] == [4.0, 3.0, 3.0]


def test_locked_parameters_stay_bit_identical_after_a_step(tmp_path, data) -> None:
    torch.manual_seed(0)
    from trafficsearch.models import load_model

    init = load_model("open_clip:ts-tiny-test").model.state_dict()  # the loop seeds 0 before building
    cfg = _cfg(
        data,
        "train.max_steps=1",
        "model.lock_image=true",
        "model.unlocked_image_groups=1",
        "model.lock_text=true",
        "model.cache_text_features=false",
        "optim.weight_decay=0.1",
    )
    train(cfg, tmp_path / "r", show_progress=False)
    after = load_file(str(tmp_path / "r" / "last" / "weights.safetensors"))
    # tiny ViT groups: [stem, block 0 + ln_post, proj]: 1 unlocked group = the projection only
    frozen = [k for k in after if k.startswith("visual.") and k != "visual.proj"] + [
        "token_embedding.weight",
        "transformer.resblocks.0.attn.in_proj_weight",
    ]
    trainable = ["visual.proj", "text_projection", "logit_scale"]
    for key in frozen:
        assert torch.equal(after[key], init[key]), key
    for key in trainable:
        assert not torch.equal(after[key], init[key]), key


def test_resume_is_exact_with_augmentation_and_prompts_on(tmp_path, data) -> None:
    extra = [
        *AUG,
        "data.prompts.vehicles=true",
        "data.prompts.vehicle_form=pairs",
        "train.epochs=1",
        "train.batch_size=6",
        "train.save_every=1",
    ]
    full = train(_cfg(data, *extra), tmp_path / "full", show_progress=False)
    assert full.step == 6  # 12 images x 3 pairs (caption + two part prompts) / 6

    def cut(step: int) -> None:
        if step == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(_cfg(data, *extra), tmp_path / "cut", show_progress=False, on_step=cut)
    resumed = train(_cfg(data, *extra), tmp_path / "cut", resume=True, show_progress=False)
    assert resumed.step == 6
    a = load_file(str(tmp_path / "full" / "last" / "weights.safetensors"))
    b = load_file(str(tmp_path / "cut" / "last" / "weights.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert [r["loss"] for r in _rows(tmp_path / "cut")] == pytest.approx(
        [r["loss"] for r in _rows(full.run_dir)]
    )


def test_pure_bf16_trains_bf16_weights_and_resumes(tmp_path, data) -> None:
    result = train(
        _cfg(data, "train.precision=pure_bf16", "train.epochs=1"), tmp_path / "r", show_progress=False
    )
    weights = load_file(str(result.run_dir / "last" / "weights.safetensors"))
    assert weights["visual.proj"].dtype == torch.bfloat16  # open_clip's lp cast: projections, Linear, Conv
    assert weights["logit_scale"].dtype == torch.float32 and weights["ln_final.weight"].dtype == torch.float32
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in _rows(result.run_dir))
