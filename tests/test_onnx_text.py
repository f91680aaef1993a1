"""ONNX Runtime query encoders: the same embeddings as PyTorch fp32 (mixed-length batches, real val texts),
only when opted in, and PyTorch for models they do not cover."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trafficsearch.errors import ConfigError
from trafficsearch.models import onnx_text
from trafficsearch.search.cache import encode_queries
from trafficsearch.testing.color import ColorModel

torch.set_num_threads(1)
TEXTS = [
    "A white sedan.",
    "A pedestrian in a red short-sleeved shirt and black trousers, carrying a backpack.",
    "A blue SUV driving on the road.",
    "a",
]


def _check_same(model) -> None:
    with torch.no_grad():
        want = model.encode_texts(TEXTS).float().numpy()
    encoder = onnx_text.query_encoder(model)
    assert isinstance(encoder, onnx_text.OnnxTextEncoder)
    got = encoder(TEXTS)
    assert got.shape == want.shape and got.dtype == np.float32
    assert (got * want).sum(axis=1).min() > 0.9999
    alone = np.concatenate([encoder([t]) for t in TEXTS])  # no padding vs padded batch: same vectors
    np.testing.assert_allclose(alone, got, atol=1e-4)
    np.testing.assert_allclose(encode_queries(model, TEXTS), got)  # what the engines' caches call
    many = encoder(TEXTS * 5, batch_size=3)  # several length runs, capped at 3 texts: the input order back
    np.testing.assert_allclose(many, np.tile(got, (5, 1)), atol=1e-4)
    assert onnx_text.query_encoder(model) is encoder  # exported once per model
    # its ORT threads sleep between queries instead of spinning on the service's cores
    options = encoder.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_blip_text_tower_matches_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    from trafficsearch.models.blip import create_blip

    monkeypatch.setenv(onnx_text.ENV, "onnx")
    _check_same(create_blip("blip-tiny", seed=0).eval())


def test_default_clip_minilm_text_tower_matches_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    from trafficsearch.models.factory import load_model

    monkeypatch.setenv(onnx_text.ENV, "onnx")
    torch.manual_seed(0)
    _check_same(load_model("open_clip:ts-minilm-vit-s64"))


def test_opt_in_only_and_uncovered_models_keep_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ColorModel()
    monkeypatch.delenv(onnx_text.ENV, raising=False)
    assert onnx_text.backend() == "torch" and onnx_text.query_encoder(model) is None
    monkeypatch.setenv(onnx_text.ENV, "onnx")
    assert onnx_text.query_encoder(model) is None  # not a tower we export
    assert encode_queries(model, ["red"]).shape == (1, 8) and model.text_calls == 1
    monkeypatch.setenv(onnx_text.ENV, "tensorrt")
    with pytest.raises(ConfigError, match="TRAFFICSEARCH_QUERY_ENCODER"):
        onnx_text.backend()


@pytest.mark.parametrize("itm_pool", ["cls", "mean"])
def test_onnx_itm_head_scores_like_pytorch(monkeypatch: pytest.MonkeyPatch, itm_pool: str) -> None:
    from trafficsearch.models.blip import create_blip

    blip = create_blip("blip-tiny", seed=0).eval()
    blip.itm_pool = itm_pool  # the demo's BLIP pools the mean (blip-small-minilm3.json)
    torch.manual_seed(0)
    pixels = torch.rand(len(TEXTS), 3, blip.image_size, blip.image_size)
    tokens = blip.itm_image_tokens(pixels)
    want = blip.itm_scores_tokens(TEXTS, tokens)
    monkeypatch.delenv(onnx_text.ENV, raising=False)
    assert onnx_text.itm_head(blip) is None  # opt-in only
    monkeypatch.setenv(onnx_text.ENV, "onnx")
    head = onnx_text.itm_head(blip)
    assert isinstance(head, onnx_text.OnnxItmHead) and onnx_text.itm_head(blip) is head
    torch.testing.assert_close(head(TEXTS, tokens), want, atol=1e-4, rtol=1e-4)  # texts of mixed lengths
    # a micro-batch of queries: pairs in length runs of at most 2, each score back at its pair
    many = head(TEXTS * 3, tokens.repeat(3, 1, 1), batch_size=2)
    torch.testing.assert_close(many, want.repeat(3), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        head(TEXTS, tokens, probabilities=True),
        blip.itm_scores_tokens(TEXTS, tokens, probabilities=True),
        atol=1e-5,
        rtol=1e-4,
    )
    assert onnx_text.itm_head(ColorModel()) is None


def test_int8_itm_head_is_its_own_quantised_session_and_keeps_the_ranking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trafficsearch.models.blip import create_blip

    blip = create_blip("blip-tiny", seed=0).eval()
    torch.manual_seed(0)
    texts = TEXTS * 4
    tokens = blip.itm_image_tokens(torch.rand(len(texts), 3, blip.image_size, blip.image_size))
    monkeypatch.setenv(onnx_text.ENV, "onnx")
    fp32 = onnx_text.itm_head(blip)
    monkeypatch.setenv(onnx_text.ITM_ENV, "int8")
    int8 = onnx_text.itm_head(blip)
    assert isinstance(int8, onnx_text.OnnxItmHead) and int8 is not fp32 and int8.precision == "int8"
    assert onnx_text.itm_head(blip) is int8  # quantised once per model
    ops = {node.op_type for node in __import__("onnx").load_from_string(int8.graph).graph.node}
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops  # really an int8 graph
    want, got = fp32(texts, tokens), int8(texts, tokens)
    assert not torch.equal(got, want)
    assert float(np.corrcoef(got.numpy(), want.numpy())[0, 1]) > 0.95  # close, not equal
    monkeypatch.setenv(onnx_text.ITM_ENV, "fp16")
    with pytest.raises(ConfigError, match="TRAFFICSEARCH_ITM_HEAD='fp16'"):
        onnx_text.itm_head(blip)


def test_auto_means_onnx_when_installed_and_the_service_default_is_auto(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(onnx_text.ENV, "auto")
    assert onnx_text.onnx_available() and onnx_text.backend() == "onnx"  # the test extra installs both
    monkeypatch.setattr(onnx_text, "onnx_available", lambda: False)
    assert onnx_text.backend() == "torch"  # without onnxruntime: PyTorch, no error
    monkeypatch.undo()
    monkeypatch.delenv(onnx_text.ENV, raising=False)
    monkeypatch.setattr(onnx_text, "_default", onnx_text._default)  # restored after the test
    onnx_text.set_default("auto")  # what `trafficsearch serve` does
    assert onnx_text.backend() == "onnx"
    monkeypatch.setenv(onnx_text.ENV, "torch")  # the environment still wins over the process default
    assert onnx_text.backend() == "torch"
    with pytest.raises(ConfigError, match="query encoder='fast'"):
        onnx_text.set_default("fast")


def test_serve_warm_up_runs_every_stage_before_the_first_request() -> None:
    from trafficsearch.cli.serve_commands import warm_up

    class Engine:
        def __init__(self, rerank_stages: list) -> None:
            self.rerank_stages, self.calls = rerank_stages, []

        def search(self, texts, k=10, rerank=False):
            self.calls.append((tuple(texts), k, rerank))

    plain, reranking = Engine([]), Engine(["itm"])
    warm_up(plain)
    warm_up(reranking)
    assert plain.calls == [(("warm-up",), 1, False)]
    assert reranking.calls == [(("warm-up",), 1, False), (("warm-up",), 1, True)]


def test_length_buckets_cover_in_order_and_split_where_padding_costs_more_than_a_call() -> None:
    assert onnx_text.length_buckets(np.array([5, 6, 7, 8]), 32) == [slice(0, 4)]
    short_long = np.array([12] * 10 + [60] * 10)  # vehicles and pedestrians: 10 x 48 padding > one call
    assert onnx_text.length_buckets(short_long, 32) == [slice(0, 10), slice(10, 20)]
    assert onnx_text.length_buckets(np.array([12, 20]), 32) == [slice(0, 2)]  # 8 padding < one call
    rng = np.random.default_rng(0)
    for _ in range(50):
        lengths = np.sort(rng.integers(1, 77, rng.integers(1, 300)))
        runs = onnx_text.length_buckets(lengths, 16)
        assert runs[0].start == 0 and runs[-1].stop == len(lengths)
        assert all(a.stop == b.start for a, b in zip(runs, runs[1:], strict=False))
        assert all(0 < r.stop - r.start <= 16 for r in runs)
