"""The BLIP tokenizer: built offline from the packaged BERT-uncased vocab, with BLIP's special tokens."""

from __future__ import annotations

import pytest

from trafficsearch.errors import ConfigError
from trafficsearch.models.bert_tokenizer import (
    BLIP_VOCAB_SIZE,
    MAX_LENGTH,
    BlipTokenizer,
    minilm_vocab_dir,
    pre_caption,
)

TEXTS = [
    "A pedestrian who is female is aged 60 or older, with her body facing the camera. "
    "She is wearning a hat,glasses.",
    "This is a grey China-Moto SUV.",
]


@pytest.fixture(scope="module")
def tok() -> BlipTokenizer:
    return BlipTokenizer()


def test_special_tokens_follow_bert_vocab(tok: BlipTokenizer) -> None:
    assert MAX_LENGTH == 100
    assert tok.vocab_size == BLIP_VOCAB_SIZE == 30524
    assert (tok.dec_token_id, tok.enc_token_id) == (30522, 30523)


def test_ids_match_the_packaged_reference_tokenizer(tok: BlipTokenizer) -> None:
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(minilm_vocab_dir()))
    batch = tok(TEXTS)
    for row, text in zip(batch.input_ids.tolist(), TEXTS, strict=True):
        expected = ref(text)["input_ids"]
        assert row[: len(expected)] == expected
        assert row[0] == ref.cls_token_id
    assert batch.attention_mask[1].sum().item() == len(ref(TEXTS[1])["input_ids"])


def test_max_length_is_respected(tok: BlipTokenizer) -> None:
    long_text = " ".join(["pedestrian"] * 250)
    batch = tok([long_text, "a red bmw."])
    assert batch.input_ids.shape == (2, MAX_LENGTH)
    assert batch.input_ids[0, -1].item() == tok.hf.sep_token_id
    short = BlipTokenizer(max_length=8)([long_text])
    assert short.input_ids.shape == (1, 8)


def test_for_itm_swaps_cls_for_enc(tok: BlipTokenizer) -> None:
    batch = tok(TEXTS)
    itm = batch.for_itm()
    assert (itm[:, 0] == tok.enc_token_id).all()
    assert (itm[:, 1:] == batch.input_ids[:, 1:]).all()
    assert (batch.input_ids[:, 0] == tok.hf.cls_token_id).all()  # the original is untouched


def test_missing_vocab_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="vocab.txt"):
        BlipTokenizer(tmp_path / "nowhere")


def test_pre_caption_matches_blip_training_cleanup() -> None:
    assert pre_caption('This is a  "white" Audi.  ') == "this is a white audi"
    assert pre_caption("a b c d", max_words=2) == "a b"
