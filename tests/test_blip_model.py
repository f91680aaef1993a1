"""BlipRetrieval: creation, the RetrievalModel encoders, ITM scores, checkpoint round trip, the real name."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from trafficsearch.errors import ConfigError
from trafficsearch.models.blip import (
    BLIP_LARGE_ID,
    BlipRetrieval,
    create_blip,
    list_blip_configs,
    load_blip,
)

torch.set_num_threads(2)
TEXTS = [
    "This is a white Audi.",
    "A red BMW.",
    "A pedestrian who is male is aged 60 or older.",
    "This is a Bus.",
]


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_packaged_configs() -> None:
    assert {"blip-tiny", "blip-small", "blip-large"} <= set(list_blip_configs())


def test_tiny_config_builds_the_hf_retrieval_model(blip_tiny: BlipRetrieval) -> None:
    from transformers import BlipForImageTextRetrieval

    assert isinstance(blip_tiny.hf, BlipForImageTextRetrieval)
    assert (blip_tiny.name, blip_tiny.embed_dim, blip_tiny.image_size) == ("blip-tiny", 32, 32)
    assert blip_tiny.hf.config.text_config.vocab_size >= blip_tiny.tokenizer.vocab_size
    assert blip_tiny.temp.item() == pytest.approx(0.07)


def test_same_seed_same_weights() -> None:
    a, b, c = (create_blip("blip-tiny", seed=s) for s in (3, 3, 4))
    w = "hf.vision_proj.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])


def test_image_transform_pads_to_square(blip_tiny: BlipRetrieval) -> None:
    tall = Image.new("RGB", (10, 40), (255, 255, 255))
    x = blip_tiny.image_transform()(tall)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    # the white crop sits in the middle; the padded side columns are black (the normalised value of 0)
    assert x[:, :, 0].max() < 0 < x[:, :, 16].min()


def test_encoders_are_normalised_shaped_and_deterministic(
    blip_tiny: BlipRetrieval, pixels: torch.Tensor
) -> None:
    img = blip_tiny.encode_images(pixels, batch_size=3)
    txt = blip_tiny.encode_texts(TEXTS, batch_size=3)
    assert img.shape == (4, 32) and txt.shape == (4, 32)
    assert img.dtype == txt.dtype == torch.float32
    assert torch.allclose(img.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(txt.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(blip_tiny.encode_images(pixels), img, atol=1e-6)  # batching does not matter
    assert torch.equal(blip_tiny.encode_texts(TEXTS, batch_size=3), txt)
    assert not torch.allclose(img[0], img[1])


def test_itm_scores_are_pairwise_logits(blip_tiny: BlipRetrieval, pixels: torch.Tensor) -> None:
    logits = blip_tiny.itm_scores(TEXTS, pixels, batch_size=3)
    probs = blip_tiny.itm_scores(TEXTS, pixels, probabilities=True)
    assert logits.shape == (4,) and probs.shape == (4,)
    assert ((probs > 0) & (probs < 1)).all()
    tok = blip_tiny.tokenize(TEXTS[1:2])
    with torch.no_grad():
        pair = blip_tiny.itm_logits(tok.input_ids, tok.attention_mask, blip_tiny.image_tokens(pixels[1:2]))
    assert torch.allclose(logits[1], pair[0, 1], atol=1e-5)
    assert torch.allclose(probs[1], pair.softmax(-1)[0, 1], atol=1e-5)
    with pytest.raises(ValueError):
        blip_tiny.itm_scores(TEXTS[:3], pixels)


def test_itm_repeated_texts_of_mixed_lengths_match_one_pair_at_a_time(
    blip_tiny: BlipRetrieval, pixels: torch.Tensor
) -> None:
    """Re-ranking pairs each query with K candidates: texts repeat and lengths differ. Tokenizing each text
    once and batching pairs by length (trimmed padding, reordered) must not change any pair's score."""
    texts = [TEXTS[i % 3] for i in (2, 0, 2, 1, 0, 2, 1, 0)]
    images = blip_tiny.itm_image_tokens(pixels[[i % 4 for i in range(8)]])
    batched = blip_tiny.itm_scores_tokens(texts, images, batch_size=3)
    single = torch.stack(
        [blip_tiny.itm_scores_tokens([t], images[i : i + 1], batch_size=1)[0] for i, t in enumerate(texts)]
    )
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    assert batched[0] != batched[3]  # different pairs, different scores: the output is in input order


def test_itm_uses_enc_not_cls(blip_tiny: BlipRetrieval, pixels: torch.Tensor) -> None:
    """The HF forward feeds [CLS] to the image-grounded encoder; BLIP trained ITM with [ENC]."""
    tok = blip_tiny.tokenize(TEXTS)
    with torch.no_grad():
        tokens = blip_tiny.image_tokens(pixels)
        ours = blip_tiny.itm_logits(tok.input_ids, tok.attention_mask, tokens)
        with_cls = blip_tiny.hf.itm_head(
            blip_tiny.hf.text_encoder(
                input_ids=tok.input_ids, attention_mask=tok.attention_mask, encoder_hidden_states=tokens
            ).last_hidden_state[:, 0]
        )
        with_enc = blip_tiny.hf.itm_head(
            blip_tiny.hf.text_encoder(
                input_ids=tok.for_itm(), attention_mask=tok.attention_mask, encoder_hidden_states=tokens
            ).last_hidden_state[:, 0]
        )
    assert torch.allclose(ours, with_enc, atol=1e-6)
    assert not torch.allclose(ours, with_cls, atol=1e-4)


def test_save_load_round_trip(blip_tiny: BlipRetrieval, pixels: torch.Tensor, tmp_path) -> None:
    with torch.no_grad():
        blip_tiny.temp.fill_(0.05)
    out = blip_tiny.save(tmp_path / "ckpt", config={"model": {"name": "blip-tiny"}, "lr": 5e-6})
    assert {p.name for p in out.iterdir()} == {"weights.safetensors", "model.json", "config.yaml"}
    meta = json.loads((out / "model.json").read_text())
    assert meta["family"] == "blip" and meta["tokenizer"] == {"source": "@minilm", "max_length": 100}
    loaded = load_blip(out).eval()
    assert loaded.temp.item() == pytest.approx(0.05)
    assert torch.equal(loaded.encode_images(pixels), blip_tiny.encode_images(pixels))
    assert torch.equal(loaded.encode_texts(TEXTS), blip_tiny.encode_texts(TEXTS))
    assert torch.equal(loaded.itm_scores(TEXTS, pixels), blip_tiny.itm_scores(TEXTS, pixels))
    manifest = loaded.manifest()
    assert manifest["checkpoint"] == str(out) and len(manifest["weights_sha256"]) == 64
    assert manifest["preprocess"]["image_size"] == 32 and manifest["embed_dim"] == 32
    assert (
        blip_tiny.manifest()["weights_sha256"] == manifest["weights_sha256"]
    )  # the saved model now points there
    fresh = create_blip("blip-tiny", seed=0).manifest()["weights_sha256"]
    assert (
        fresh.startswith("state:") and fresh != create_blip("blip-tiny", seed=1).manifest()["weights_sha256"]
    )
    # create_blip accepts the checkpoint directory too
    assert torch.equal(create_blip(out).encode_texts(TEXTS[:1]), blip_tiny.encode_texts(TEXTS[:1]))


def test_load_rejects_mismatched_weights(blip_tiny: BlipRetrieval, tmp_path) -> None:
    out = blip_tiny.save(tmp_path / "ckpt")
    meta = json.loads((out / "model.json").read_text())
    meta["blip_config"]["text_config"]["num_hidden_layers"] = 3
    (out / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="weights do not match"):
        load_blip(out)
    with pytest.raises(ConfigError, match="model.json is missing"):
        load_blip(tmp_path / "empty")


def test_image_size_override_interpolates_positions() -> None:
    m = create_blip("blip-tiny", image_size=48).eval()
    assert m.image_size == 48
    emb = m.encode_images(torch.randn(2, 3, 48, 48))
    assert emb.shape == (2, 32)


def test_unknown_config_lists_choices() -> None:
    with pytest.raises(ConfigError, match="blip-tiny"):
        create_blip("blip-nonexistent")


@pytest.mark.parametrize("spec", [BLIP_LARGE_ID, "blip-large"])
def test_real_name_without_weights_is_a_clear_error(spec: str, tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        create_blip(spec, cache_dir=tmp_path / "hf-cache")
    message = info.value.one_line()
    assert BLIP_LARGE_ID in message and "not available offline" in message
    assert f"hf download {BLIP_LARGE_ID}" in message


def test_small_demo_config_builds() -> None:
    m = create_blip("blip-small").eval()
    assert (m.embed_dim, m.image_size) == (128, 64)
    assert m.encode_images(torch.zeros(1, 3, 64, 64)).shape == (1, 128)


def test_text_init_from_packaged_minilm_reproduces_it(tmp_path) -> None:
    """`text_init: @minilm` copies the pretrained BERT: BLIP's unimodal text encoder then equals MiniLM."""
    from transformers import AutoModel

    from trafficsearch.models.bert_tokenizer import minilm_vocab_dir
    from trafficsearch.models.blip import load_blip_config

    cfg = load_blip_config("blip-small-minilm")
    cfg["blip_config"]["vision_config"].update(hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    cfg["blip_config"]["vision_config"].update(num_attention_heads=2, image_size=32)
    (tmp_path / "mini.json").write_text(json.dumps(cfg))
    m = create_blip(tmp_path / "mini.json").eval()
    ref = AutoModel.from_pretrained(str(minilm_vocab_dir())).eval()
    tok = m.tokenize(TEXTS)
    with torch.no_grad():
        ours = m.hf.text_encoder(input_ids=tok.input_ids, attention_mask=tok.attention_mask).last_hidden_state
        theirs = ref(input_ids=tok.input_ids, attention_mask=tok.attention_mask).last_hidden_state
    mask = tok.attention_mask.bool()
    assert torch.allclose(ours[mask], theirs[mask], atol=1e-4)
    emb = m.hf.text_encoder.embeddings.word_embeddings.weight
    assert torch.equal(emb[m.tokenizer.enc_token_id], emb[101])  # [ENC] starts as [CLS]
