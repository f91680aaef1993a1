"""CLIP loss switches: truncation of the noisiest pairs, many-to-many targets, decay groups, lock summary."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from torch import nn

from trafficsearch.data.labels import read_labels
from trafficsearch.data.records import Record, is_relevant
from trafficsearch.errors import ConfigError
from trafficsearch.train.contrastive import (
    ContrastiveConfig,
    build_targets,
    contrastive_loss,
    kept_count,
    lock_summary,
    param_groups,
    per_pair_losses,
    positive_mask,
    soft_targets,
    truncated_mean,
)

torch.set_num_threads(2)
SCALE = 10.0


def graded_pairs(cosines: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i = e_i; text i = cos_i e_i + sin_i e_(n+i): pair i's logit is SCALE*cos_i, all others 0."""
    n = len(cosines)
    images = torch.zeros(n, 2 * n, dtype=torch.float64)
    texts = torch.zeros(n, 2 * n, dtype=torch.float64)
    for i, c in enumerate(cosines):
        images[i, i] = 1.0
        texts[i, i], texts[i, n + i] = c, math.sqrt(1 - c * c)
    return images, texts


def closed_form(c: float, n: int) -> float:
    """Per-pair loss (both directions) when the pair's logit is SCALE*c and the other n-1 logits are 0."""
    return 2 * (math.log(math.exp(SCALE * c) + n - 1) - SCALE * c)


def test_kept_count_follows_the_seed():
    assert kept_count(128, 0.05) == 121  # int(121.6)
    assert kept_count(480, 0.05) == 456
    assert kept_count(320, 0.05) == 304
    assert kept_count(10, 0.9) == 1  # 10 * (1 - 0.9) is 0.9999999999999998 in floats
    assert kept_count(3, 0.5) == 1
    assert kept_count(7, 0.0) == 7


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.25])
def test_truncation_drops_exactly_the_largest_losses(ratio):
    n = 40
    cosines = [0.2 + 0.75 * k / (n - 1) for k in range(n)]
    random.Random(0).shuffle(cosines)
    images, texts = graded_pairs(cosines)
    loss, per_pair = contrastive_loss(images, texts, SCALE, truncate_ratio=ratio)
    expected_all = torch.tensor([closed_form(c, n) for c in cosines], dtype=torch.float64)
    torch.testing.assert_close(per_pair, expected_all)
    keep = int(n * (1 - ratio))
    dropped = sorted(range(n), key=lambda i: cosines[i])[: n - keep]  # smallest cosine = largest loss
    kept = [i for i in range(n) if i not in dropped]
    _, kept_mask = truncated_mean(per_pair, ratio)
    assert sorted(torch.nonzero(kept_mask).flatten().tolist()) == kept
    assert loss.item() == pytest.approx(expected_all[kept].mean().item() / 2, rel=1e-12)
    assert loss.item() < per_pair.mean().item() / 2


def test_dropped_pairs_get_no_gradient_through_the_mean():
    losses = torch.tensor([1.0, 5.0, 2.0, 9.0, 3.0], requires_grad=True)
    mean, kept = truncated_mean(losses, 0.4)  # keep int(5 * 0.6) = 3
    mean.backward()
    assert kept.tolist() == [True, False, True, False, True]
    torch.testing.assert_close(losses.grad, torch.tensor([1 / 3, 0.0, 1 / 3, 0.0, 1 / 3]))


def test_ratio_zero_equals_open_clip_cliploss():
    gen = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(24, 16, generator=gen), dim=-1)
    texts = F.normalize(torch.randn(24, 16, generator=gen), dim=-1)
    scale = torch.tensor(14.3)
    reference = ClipLoss()(images, texts, scale)
    ours, per_pair = contrastive_loss(images, texts, scale)
    torch.testing.assert_close(ours, reference)
    # explicit one_to_one targets and "equal" with all-distinct keys are the same loss
    eye = positive_mask("one_to_one", n=24)
    torch.testing.assert_close(contrastive_loss(images, texts, scale, targets=eye)[0], reference)
    distinct = positive_mask("equal", [f"k{i}" for i in range(24)])
    torch.testing.assert_close(contrastive_loss(images, texts, scale, targets=distinct)[1], per_pair)
    assert contrastive_loss(images, texts, scale, truncate_ratio=0.05)[0] < reference


def test_equal_targets_make_soft_multi_positive_rows():
    mask = positive_mask("equal", ["a", "b", "a", "c"])
    assert mask.tolist() == [
        [True, False, True, False],
        [False, True, False, False],
        [True, False, True, False],
        [False, False, False, True],
    ]
    image_to_text, text_to_image = soft_targets(mask)
    assert image_to_text[0].tolist() == [0.5, 0.0, 0.5, 0.0]
    assert image_to_text[1].tolist() == [0.0, 1.0, 0.0, 0.0]
    torch.testing.assert_close(text_to_image.sum(dim=1), torch.ones(4))
    # the loss uses those soft targets: check row 0 by hand
    gen = torch.Generator().manual_seed(1)
    images = F.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    texts = F.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    per_pair = per_pair_losses(images, texts, SCALE, mask)
    logp_i = torch.log_softmax(SCALE * images @ texts.T, dim=1)
    logp_t = torch.log_softmax(SCALE * texts @ images.T, dim=1)
    by_hand = -(logp_i[0, 0] + logp_i[0, 2]) / 2 - (logp_t[0, 0] + logp_t[0, 2]) / 2
    torch.testing.assert_close(per_pair[0], by_hand)
    assert not torch.allclose(per_pair, per_pair_losses(images, texts, SCALE))


def vector(*on: int, female: bool = True) -> tuple[int, ...]:
    v = [0] * 21
    v[0] = int(female)
    for i in on:
        v[i] = 1
    return tuple(v)


def test_contain_targets_on_hand_made_records():
    base = vector(2, 4, 13)  # female, 18-60, front, short sleeve
    more = vector(2, 4, 9, 13)  # ... and a handbag
    male = vector(2, 4, 9, 13, female=False)
    keys = ["p:base", "p:more", "p:male", "v:white Audi.", "v:white Audi."]
    vectors = [base, more, male, None, None]
    mask = positive_mask("contain", keys, vectors)
    # rows are images, columns texts: the image with a handbag answers the text without one, not back
    assert mask[1, 0] and not mask[0, 1]
    assert not mask[2, 0] and not mask[2, 1] and not mask[1, 2]  # gender must match
    assert mask[3, 4] and mask[4, 3]  # vehicles: equal keys
    assert not mask[:3, 3:].any() and not mask[3:, :3].any()
    assert mask.diagonal().all()
    assert mask.sum().item() == 5 + 1 + 2
    equal = positive_mask("equal", keys)
    assert (mask | equal).equal(mask)
    image_to_text, text_to_image = soft_targets(mask)
    assert image_to_text[1].tolist() == [0.5, 0.5, 0.0, 0.0, 0.0]
    assert text_to_image[0].tolist() == [0.5, 0.5, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="vectors"):
        positive_mask("contain", keys)


@pytest.fixture(scope="module")
def val_sample(val_labels_path) -> list[Record]:
    records = read_labels(val_labels_path).records
    rng = random.Random(0)
    return rng.sample(records[:3413], 60) + rng.sample(records[3413:], 240)


def test_targets_on_real_val_records_match_the_relevance_rules(val_sample):
    equal = build_targets(val_sample, "equal")
    contain = build_targets(val_sample, "contain")
    assert build_targets(val_sample, "one_to_one").equal(torch.eye(len(val_sample), dtype=torch.bool))
    assert equal.diagonal().all() and contain.diagonal().all()
    assert (contain & equal).equal(equal)  # contain is a superset of equal
    assert contain.sum() > equal.sum()
    for rule, mask in (("equal", equal), ("contain", contain)):
        oracle = [[is_relevant(text, image, rule) for text in val_sample] for image in val_sample]
        assert mask.tolist() == oracle


def test_targets_change_the_loss_and_reject_a_false_diagonal(val_sample):
    gen = torch.Generator().manual_seed(2)
    n = len(val_sample)
    images = F.normalize(torch.randn(n, 32, generator=gen), dim=-1)
    texts = F.normalize(torch.randn(n, 32, generator=gen), dim=-1)
    losses = {
        m: contrastive_loss(images, texts, SCALE, targets=build_targets(val_sample, m))[0].item()
        for m in ("one_to_one", "equal", "contain")
    }
    assert len(set(losses.values())) == 3
    bad = torch.eye(4, dtype=torch.bool)
    bad[1, 1] = False
    with pytest.raises(ValueError, match="diagonal"):
        per_pair_losses(images[:4], texts[:4], SCALE, bad)


def test_truncation_start_step_switch():
    config = ContrastiveConfig(truncate_ratio=0.05, truncate_start_step=100)
    assert config.ratio_at(0) == 0.0 and config.ratio_at(99) == 0.0
    assert config.ratio_at(100) == 0.05 and config.ratio_at(5000) == 0.05
    images, texts = graded_pairs([0.3 + 0.01 * k for k in range(40)])
    before = contrastive_loss(images, texts, SCALE, truncate_ratio=config.ratio_at(99))[0]
    after = contrastive_loss(images, texts, SCALE, truncate_ratio=config.ratio_at(100))[0]
    assert after < before
    assert ContrastiveConfig().truncate_ratio == 0.05 and ContrastiveConfig().targets == "one_to_one"
    assert ContrastiveConfig.from_dict({"targets": "contain"}).targets == "contain"
    with pytest.raises(ConfigError, match="target mode"):
        ContrastiveConfig(targets="many")
    with pytest.raises(ConfigError, match="truncate_ratio"):
        ContrastiveConfig(truncate_ratio=1.0)
    with pytest.raises(ConfigError, match="unknown key"):
        ContrastiveConfig.from_dict({"ratio": 0.1})


class Tower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(8))
        self.positional_embedding = nn.Parameter(torch.zeros(5, 8))
        self.proj = nn.Linear(8, 8)
        self.ln_post = nn.LayerNorm(8)
        self.bn = nn.BatchNorm1d(8)


class TinyClip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.visual = Tower()
        self.text = Tower()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.text_projection = nn.Parameter(torch.zeros(8, 4))


def test_param_groups_follow_open_clips_rule():
    model = TinyClip()
    for p in model.text.parameters():
        p.requires_grad_(False)
    groups = {g["name"]: g for g in param_groups(model, 0.2)}
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for p in groups["decay"]["params"]}
    no_decay = {names[id(p)] for p in groups["no_decay"]["params"]}
    assert decay == {"visual.positional_embedding", "visual.proj.weight", "text_projection"}
    assert no_decay == {
        "visual.class_embedding",
        "visual.proj.bias",
        "visual.ln_post.weight",
        "visual.ln_post.bias",
        "visual.bn.weight",
        "visual.bn.bias",
        "logit_scale",
    }
    assert groups["decay"]["weight_decay"] == 0.2 and groups["no_decay"]["weight_decay"] == 0.0
    optimizer = torch.optim.AdamW(param_groups(model, 0.2), lr=1e-3)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 10
    frozen = TinyClip().requires_grad_(False)
    assert param_groups(frozen, 0.2) == []


def test_lock_summary_counts_trainable_and_frozen():
    model = TinyClip()
    tower = sum(p.numel() for p in model.text.parameters())
    total = sum(p.numel() for p in model.parameters())
    model.text.requires_grad_(False)
    summary = lock_summary(model)
    assert summary.frozen == tower and summary.trainable == total - tower and summary.total == total
    assert summary.by_module["text"] == (0, tower)
    assert summary.by_module["visual"] == (tower, 0)
    assert summary.by_module["logit_scale"] == (1, 0)
    assert f"{summary.trainable:,} trainable" in summary.describe()
