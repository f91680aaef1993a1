"""A short overfit on 4 pairs: the loss falls and the ITM head ranks matching pairs first."""

from __future__ import annotations

import pytest
import torch

from trafficsearch.models.blip import create_blip
from trafficsearch.train.blip_loss import blip_itc_itm_loss

torch.set_num_threads(2)
TEXTS = [
    "This is a white Audi.",
    "A red BMW.",
    "A pedestrian who is male is aged 60 or older.",
    "This is a Bus.",
]


@pytest.fixture(scope="module")
def overfit() -> dict:
    """40 AdamW steps of the full loss on 4 pairs (word embeddings frozen to keep the step cheap)."""
    torch.manual_seed(0)
    m = create_blip("blip-tiny", seed=0)
    m.hf.text_encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=5e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    losses = []
    m.train()
    for _ in range(40):
        out = blip_itc_itm_loss(m, pixels, TEXTS, [0, 1, 2, 3], generator=gen)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append({k: v.item() for k, v in out.items()})
    m.eval()
    return {"model": m, "pixels": pixels, "losses": losses}


def test_optimisation_lowers_the_loss(overfit: dict) -> None:
    first, last = overfit["losses"][:3], overfit["losses"][-3:]
    for key in ("loss", "itc", "itm"):
        assert max(x[key] for x in last) < min(x[key] for x in first)


def test_itm_ranks_matching_pairs_first_after_overfit(overfit: dict) -> None:
    m, pixels = overfit["model"], overfit["pixels"]
    # scores[k, i]: text i against image (i - k) mod 4; k = 0 is the matching pair
    scores = torch.stack([m.itm_scores(TEXTS, pixels.roll(k, 0)) for k in range(4)])
    assert (scores[0] > scores[1:].max(dim=0).values).all()
    probs = m.itm_scores(TEXTS, pixels, probabilities=True)
    assert (probs > 0.5).all()
    # ITC agrees: each text's nearest image is its own
    sims = m.encode_texts(TEXTS) @ m.encode_images(pixels).t()
    assert torch.equal(sims.argmax(dim=1), torch.arange(4))
