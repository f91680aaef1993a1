"""The seed's BLIP loss: ITC with soft same-id targets + ITM on sampled hard negatives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trafficsearch.errors import ConfigError
from trafficsearch.models.blip import TEMP_MAX, TEMP_MIN, BlipRetrieval
from trafficsearch.train.blip_loss import (
    as_id_tensor,
    blip_features,
    blip_itc_itm_loss,
    positive_mask,
    sample_hard_negatives,
)

torch.set_num_threads(2)
TEXTS = [
    "This is a white Audi.",
    "A red BMW.",
    "A pedestrian who is male is aged 60 or older.",
    "This is a Bus.",
]


def _pixels(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# -- the sampler ---------------------------------------------------------------------------------------
def test_positive_mask_by_id_and_attribute() -> None:
    ids = torch.tensor([0, 1, 1, 2])
    attr = torch.tensor([7, 8, 8, 7])
    assert positive_mask(ids, ids).tolist() == [
        [True, False, False, False],
        [False, True, True, False],
        [False, True, True, False],
        [False, False, False, True],
    ]
    both = positive_mask(ids, ids, attr, attr)
    assert both[0, 3] and both[3, 0] and not both[0, 1]


@pytest.mark.parametrize("many_to_many", [False, True])
def test_hard_negatives_never_hit_a_positive(many_to_many: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    b, n = 6, 12  # a local batch of 6 inside a gathered world of 12 (rows 3..8 are local)
    world_ids = torch.tensor([10, 11, 12, 0, 1, 1, 2, 3, 4, 13, 0, 14])
    world_attr = torch.tensor([5, 6, 5, 5, 6, 6, 7, 5, 8, 9, 5, 6])
    local_ids, local_attr = world_ids[3:9], world_attr[3:9]
    attr = (local_attr, world_attr) if many_to_many else (None, None)
    exclude = positive_mask(local_ids, world_ids, *attr)
    # make positives the most similar by far, so a sampler that ignored the mask would pick them
    sim = torch.randn(b, n, generator=gen) + 20.0 * exclude.float()
    draws = 2000  # 2000 independent draws per row, as one call over the rows repeated
    rows = torch.arange(b).repeat(draws)
    idx, valid = sample_hard_negatives(sim[rows], exclude[rows], generator=gen)
    assert valid.all()
    assert not exclude[rows, idx].any()
    counts = torch.zeros(b, n).index_put_((rows, idx), torch.ones(len(rows)), accumulate=True)
    assert (counts[exclude] == 0).all()
    # drawn from softmax(sim): the most similar allowed column is the most frequent draw of each row
    allowed_sim = sim.masked_fill(exclude, float("-inf"))
    assert torch.equal(counts.argmax(dim=1), allowed_sim.argmax(dim=1))
    same_attr_other_id = (local_attr[:, None] == world_attr[None, :]) & (
        local_ids[:, None] != world_ids[None, :]
    )
    if many_to_many:  # a caption of another image with the same attributes is no negative
        assert counts[same_attr_other_id].sum() == 0
    else:  # ... but without many-to-many it is one, like any other image
        assert counts[same_attr_other_id].sum() > 0


def test_a_hard_share_below_one_mixes_in_uniform_negatives() -> None:
    """loss.itm_hard_share: the draw is hard_share * softmax(sim) + (1 - hard_share) * uniform over the
    allowed columns; positives stay excluded either way."""
    gen = torch.Generator().manual_seed(0)
    exclude = torch.tensor([[True, False, False, False, False]])
    sim = torch.tensor([[50.0, 30.0, 0.0, 0.0, 0.0]])  # column 1 is by far the hardest allowed negative
    rows = torch.zeros(8000, dtype=torch.long)
    counts = {}
    for share in (1.0, 0.5, 0.0):
        idx, valid = sample_hard_negatives(sim[rows], exclude[rows], generator=gen, hard_share=share)
        assert valid.all() and not (idx == 0).any()
        counts[share] = torch.bincount(idx, minlength=5).float() / len(idx)
    assert counts[1.0][1] > 0.999  # BLIP: always the hardest
    expected_half = torch.tensor([0.0, 0.5 + 0.5 / 4, 0.5 / 4, 0.5 / 4, 0.5 / 4])
    assert torch.allclose(counts[0.5], expected_half, atol=0.02)
    assert torch.allclose(counts[0.0], torch.tensor([0.0, 0.25, 0.25, 0.25, 0.25]), atol=0.02)


def test_the_loss_passes_its_hard_share_to_both_samplers(blip_tiny, monkeypatch) -> None:
    import trafficsearch.train.blip_loss as blip_loss

    seen = []
    real = blip_loss.sample_hard_negatives

    def spy(sim, exclude, generator=None, hard_share=1.0):
        seen.append(hard_share)
        return real(sim, exclude, generator, hard_share)

    monkeypatch.setattr(blip_loss, "sample_hard_negatives", spy)
    blip_itc_itm_loss(blip_tiny, _pixels(), TEXTS, [0, 1, 2, 3])
    blip_itc_itm_loss(blip_tiny, _pixels(), TEXTS, [0, 1, 2, 3], itm_hard_share=0.25)
    assert seen == [1.0, 1.0, 0.25, 0.25]


def test_sampler_edge_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    exclude = torch.tensor([[True, True, True], [True, False, False]])
    sim = torch.tensor([[0.0, 1.0, 2.0], [1e4, -1e4, -1e4]])  # row 1: allowed weights underflow to 0
    rows = torch.tensor([0, 1]).repeat(200)
    idx, valid = sample_hard_negatives(sim[rows], exclude[rows], generator=gen)
    assert valid.tolist() == [False, True] * 200
    assert set(idx[1::2].tolist()) == {1, 2}  # uniform fallback over the allowed columns


def test_string_ids_hash_stably() -> None:
    a = as_id_tensor(["img_a.jpg", "img_b.jpg", "img_a.jpg"])
    assert a[0] == a[2] and a[0] != a[1] and a.dtype == torch.long
    assert torch.equal(a, as_id_tensor(["img_a.jpg", "img_b.jpg", "img_a.jpg"]))
    assert as_id_tensor([3, 4]).tolist() == [3, 4]


# -- the loss ------------------------------------------------------------------------------------------
def test_itc_uses_soft_targets_over_same_image(blip_tiny: BlipRetrieval) -> None:
    ids = [0, 1, 1, 2]  # captions 1 and 2 describe the same image
    feats = blip_features(blip_tiny, _pixels(), TEXTS, ids)
    out = blip_itc_itm_loss(
        blip_tiny, None, None, None, features=feats, generator=torch.Generator().manual_seed(0)
    )
    pos = positive_mask(feats.image_ids, feats.image_ids).float()
    targets = pos / pos.sum(1, keepdim=True)
    t = blip_tiny.temp
    i2t = -(F.log_softmax(feats.image_feat @ feats.text_feat.t() / t, 1) * targets).sum(1).mean()
    t2i = -(F.log_softmax(feats.text_feat @ feats.image_feat.t() / t, 1) * targets).sum(1).mean()
    assert out["itc"].item() == pytest.approx(((i2t + t2i) / 2).item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(out["itc"].item() + out["itm"].item(), rel=1e-5)


def test_temperature_is_clamped(blip_tiny: BlipRetrieval) -> None:
    for start, expected in ((3.0, TEMP_MAX), (1e-6, TEMP_MIN)):
        with torch.no_grad():
            blip_tiny.temp.fill_(start)
        blip_itc_itm_loss(blip_tiny, _pixels(), TEXTS, [0, 1, 2, 3])
        assert blip_tiny.temp.item() == pytest.approx(expected)
    with torch.no_grad():
        blip_tiny.temp.fill_(0.07)


def test_many_to_many_needs_attributes_and_masks_them(blip_tiny: BlipRetrieval) -> None:
    with pytest.raises(ConfigError, match="attribute"):
        blip_itc_itm_loss(blip_tiny, _pixels(), TEXTS, [0, 1, 2, 3], many_to_many=True)
    # every sample shares one attribute key: all pairs are positives (uniform ITC targets) and no ITM
    # negative exists, so only the 4 positive pairs are scored
    feats = blip_features(blip_tiny, _pixels(), TEXTS, [0, 1, 2, 3], ["A."] * 4)
    out = blip_itc_itm_loss(blip_tiny, None, None, None, features=feats, many_to_many=True)
    logits = feats.image_feat @ feats.text_feat.t() / blip_tiny.temp
    uniform = (torch.logsumexp(logits, 1) - logits.mean(1)).mean()
    uniform_t = (torch.logsumexp(logits.t(), 1) - logits.t().mean(1)).mean()
    assert out["itc"].item() == pytest.approx(((uniform + uniform_t) / 2).item(), rel=1e-5)
    pos_logits = blip_tiny.itm_logits(feats.input_ids, feats.attention_mask, feats.image_tokens)
    assert out["itm"].item() == pytest.approx(-F.log_softmax(pos_logits, 1)[:, 1].mean().item(), rel=1e-5)


def test_gathered_world_path(blip_tiny: BlipRetrieval) -> None:
    """DDP: features gathered outside are passed in; an identity gather reproduces the local loss."""
    feats = blip_features(blip_tiny, _pixels(), TEXTS, [0, 1, 2, 3], pad_to_max_length=True)
    assert feats.input_ids.shape[1] == blip_tiny.tokenizer.max_length
    a = blip_itc_itm_loss(
        blip_tiny, None, None, None, features=feats, generator=torch.Generator().manual_seed(5)
    )
    same = feats.gathered(lambda t: t)
    b = blip_itc_itm_loss(
        blip_tiny, None, None, None, features=feats, world=same, generator=torch.Generator().manual_seed(5)
    )
    assert a["loss"].item() == pytest.approx(b["loss"].item(), rel=1e-6)
    other = blip_features(blip_tiny, _pixels(seed=2), TEXTS[::-1], [4, 5, 6, 7], pad_to_max_length=True)
    world = feats.gathered(lambda t: torch.cat([t, getattr(other, _field_of(other, t))]))
    assert len(world) == 8
    blip_tiny.zero_grad()
    out = blip_itc_itm_loss(blip_tiny, None, None, None, features=feats, world=world)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert blip_tiny.hf.vision_proj.weight.grad is not None and blip_tiny.temp.grad is not None


def _field_of(feats, tensor: torch.Tensor) -> str:
    """Name of the BlipFeatures field of the same shape role (test helper for a fake two-rank gather)."""
    for name in ("image_tokens", "image_feat", "text_feat", "input_ids", "attention_mask", "image_ids"):
        if getattr(feats, name).shape[1:] == tensor.shape[1:] and getattr(feats, name).dtype == tensor.dtype:
            return name
    raise AssertionError("no matching field")
