"""Query text towers through ONNX Runtime: the same embeddings (cosine to PyTorch fp32 > 0.9999), 1.3-2x
faster than PyTorch on the CPU, one query or a batch (benchmarks/query_encode.py).

Chosen per process: TRAFFICSEARCH_QUERY_ENCODER=torch|onnx|auto (auto: onnx when onnxruntime is installed).
The library and one-shot commands default to `torch`; `trafficsearch serve` defaults to `auto` and exports
at start-up (`set_default`). Why not ONNX everywhere: the first query of a model pays the export (seconds),
and the exported graph is a snapshot of the weights at that moment, right for a search service, wrong for a
model still training. Dynamic int8 was measured too and rejected (benchmarks/results/query_encode.md):
PyTorch's (`quantize_dynamic` on the Linear layers) gives cosine to fp32 0.945 mean on the real val texts,
ONNX Runtime's (per-channel MatMul weights) 0.993 mean / 0.980 min, both below the 0.999 asked.

The ITM head (re-ranking) runs through ONNX Runtime under the same switch, in fp32 or, opted in with
TRAFFICSEARCH_ITM_HEAD=int8 (`serve --itm-head int8`), with its MatMul weights dynamically quantised. A
re-ranker only re-orders the fused top K, so int8 is judged by the val ranking it gives
(benchmarks/onnx_val_ranking.py --rerank). On the demo's val ensemble it ran the full val pass 1.51x faster
but changed the order inside the top 10: the same top 1 for 77% of the texts, mAP@10 +0.33 points on one
seed. That is another re-ranker, not the same one made faster, so fp32 stays the default.

Covered: open_clip models with a Hugging Face text trunk (the demo default, MiniLM) and BLIP's unimodal text
encoder (ITC). Anything else (and any export failure) keeps the PyTorch encoder.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import logging
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trafficsearch.errors import ConfigError

ENV = "TRAFFICSEARCH_QUERY_ENCODER"
CHOICES = ("torch", "onnx", "auto")
log = logging.getLogger(__name__)
_encoders: weakref.WeakKeyDictionary[Any, OnnxTextEncoder | None] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


_default = "torch"  # what an unset $TRAFFICSEARCH_QUERY_ENCODER means in this process (set_default)
ITM_ENV = "TRAFFICSEARCH_ITM_HEAD"
ITM_CHOICES = ("fp32", "int8")
ITM_DEFAULT = "fp32"  # what an unset $TRAFFICSEARCH_ITM_HEAD means (int8 re-orders the top K: opt-in)


def check_choice(value: str, source: str = ENV) -> str:
    value = value.strip().lower()
    if value not in CHOICES:
        raise ConfigError(f"{source}={value!r}: expected one of {', '.join(CHOICES)}", field=source)
    return value


def set_default(value: str) -> None:
    """The backend this process uses when $TRAFFICSEARCH_QUERY_ENCODER is unset (the service: auto)."""
    global _default
    _default = check_choice(value, "query encoder")


def check_itm_choice(value: str, source: str = ITM_ENV) -> str:
    value = value.strip().lower()
    if value not in ITM_CHOICES:
        raise ConfigError(f"{source}={value!r}: expected one of {', '.join(ITM_CHOICES)}", field=source)
    return value


def itm_precision() -> str:
    """`fp32` or `int8`: $TRAFFICSEARCH_ITM_HEAD, else fp32."""
    return check_itm_choice(os.environ.get(ITM_ENV, "").strip() or ITM_DEFAULT)


@functools.cache  # installed packages do not change under a running process; backend() asks per query
def onnx_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def backend() -> str:
    """The query encoder in effect, `torch` or `onnx`: $TRAFFICSEARCH_QUERY_ENCODER, else this process's
    default; `auto` is onnx when onnxruntime (and onnx, the exporter's) are installed."""
    value = check_choice(os.environ.get(ENV, "").strip() or _default)
    if value == "auto":
        return "onnx" if onnx_available() else "torch"
    return value


class _ClipText(nn.Module):
    """tokens -> L2-normalised open_clip text embedding (what OpenClipModel.encode_texts returns)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


class _BlipText(nn.Module):
    """(ids, mask) -> BLIP's ITC text embedding."""

    def __init__(self, blip: nn.Module) -> None:
        super().__init__()
        self.blip = blip

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.blip.text_features(input_ids, attention_mask)


def _onnxruntime() -> Any:
    """onnxruntime (and onnx, which torch.onnx.export writes through): a clear line when either is missing
    (both are dependencies, but a trimmed environment may lack them)."""
    try:
        import onnx  # noqa: F401 - imported here so a missing exporter fails with this line, not mid-export
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(
            f"{ENV}=onnx needs onnxruntime and onnx (dependencies): pip install onnxruntime onnx",
            field=ENV,
        ) from exc
    return onnxruntime


def export_onnx(
    wrapper: nn.Module,
    example: Any,
    *,
    mode: nn.Module,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> bytes:
    """`wrapper` exported to ONNX in memory, in eval mode (`mode` is switched to eval for the export and back
    after): the one export recipe of this module (benchmarks quantise its graph to compare)."""
    buffer = io.BytesIO()
    was_training = mode.training
    mode.eval()
    try:
        # the tracer's warnings (data-dependent branches of transformers' masking, constant-folded for the
        # dynamic axes declared here; checked against PyTorch in tests/test_onnx_text.py) say nothing the
        # operator of a service can act on
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                example,
                buffer,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=17,
                dynamo=False,
            )
    finally:
        mode.train(was_training)
    return buffer.getvalue()


def ort_session(ort: Any, graph: bytes, threads: int | None = None) -> Any:
    """A CPU ONNX Runtime session over `graph`: all graph optimisations, workers that sleep between calls."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # No busy-waiting between calls: spinning ORT workers took the service's cores from HTTP and FAISS
    # (one-at-a-time cold queries 0.92x PyTorch with it, 1.5x without; results/service_cold_queries.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


class OnnxTextEncoder:
    """texts -> [N, D] float32 numpy through an ONNX Runtime session exported from `model`'s text tower."""

    def __init__(self, model: Any, threads: int | None = None, graph: bytes | None = None) -> None:
        """`graph`: an ONNX graph of this tower to run instead of exporting one (e.g. a quantised copy of
        `text_tower_graph(model)`)."""
        ort = _onnxruntime()

        self.kind = _wrap(model)[0]
        self.model = weakref.proxy(model)
        self.session = ort_session(ort, graph if graph is not None else text_tower_graph(model), threads)

    def __call__(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, int(self.model.embed_dim)), np.float32)
        inputs, lengths = self._tokens(texts)
        order = np.argsort(lengths, kind="stable")
        result: np.ndarray | None = None
        for chunk in length_buckets(lengths[order], batch_size):
            rows = order[chunk]
            width = int(lengths[rows].max())
            out = self.session.run(None, {n: a[rows, :width] for n, a in inputs.items()})[0]
            if result is None:
                result = np.empty((len(texts), out.shape[1]), np.float32)
            result[rows] = out
        assert result is not None
        return result

    def _tokens(self, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Every text's padded inputs and its length (columns up to its last real token)."""
        if self.kind == "blip":
            tok = self.model.tokenizer(texts)
            mask = tok.attention_mask.numpy().astype(np.int64)
            inputs = {"input_ids": tok.input_ids.numpy().astype(np.int64), "attention_mask": mask}
            return inputs, _last_real(mask != 0)
        tokens = self.model.tokenize(texts).numpy().astype(np.int64)
        pad = self.model.model.text.config.pad_token_id
        return {"tokens": tokens}, _last_real(tokens != pad)


def _last_real(real: np.ndarray) -> np.ndarray:
    """[N, L] bool -> per row, 1 + the index of its last True column (1 for a row with none)."""
    last = real.shape[1] - 1 - np.argmax(real[:, ::-1], axis=1)
    return np.where(real.any(axis=1), last + 1, 1).astype(np.int64)


# ORT's fixed cost of one call, in padded token rows of MiniLM (one text alone: ~2.2 ms; in a batch of 32:
# ~0.7 ms per text of ~38 tokens, on 2 cores)
CALL_COST_TOKENS = 64


def length_buckets(sorted_lengths: np.ndarray, batch_size: int) -> list[slice]:
    """Consecutive runs of ascending lengths, each run padded to its longest: a text joins the current run
    while the padding that adds (the run's earlier texts widened to its length) costs less than a call of
    its own, and the run holds fewer than `batch_size` texts. Mixed vehicle (short) and pedestrian (long)
    queries then stop padding every short text to the longest one (1.5x faster on such batches)."""
    runs, start = [], 0
    for j in range(1, len(sorted_lengths) + 1):
        if j == len(sorted_lengths):
            runs.append(slice(start, j))
            break
        widen = (j - start) * int(sorted_lengths[j] - sorted_lengths[j - 1])
        if j - start >= batch_size or widen > CALL_COST_TOKENS:
            runs.append(slice(start, j))
            start = j
    return runs


def text_tower_graph(model: Any) -> bytes:
    """The ONNX graph of `model`'s query text tower (TypeError for a tower this module does not export)."""
    _, wrapper, example, names = _wrap(model)
    return export_onnx(
        wrapper,
        example,
        mode=wrapper,
        input_names=names,
        output_names=["embedding"],
        dynamic_axes={n: {0: "batch", 1: "length"} for n in names},
    )


def _wrap(model: Any) -> tuple[str, nn.Module, tuple[torch.Tensor, ...], list[str]]:
    from trafficsearch.models.clip import OpenClipModel, is_hf_text, trim_padding

    texts = ["a red car", "a pedestrian in a white shirt with a black backpack"]
    if isinstance(model, OpenClipModel) and is_hf_text(model.model):
        tokens = trim_padding(model.model, model.tokenize(texts))
        return "clip", _ClipText(model.model), (tokens,), ["tokens"]
    if hasattr(model, "text_features") and hasattr(model, "tokenizer") and hasattr(model, "hf"):
        tok = model.tokenizer(texts)
        return "blip", _BlipText(model), (tok.input_ids, tok.attention_mask), ["input_ids", "attention_mask"]
    raise TypeError(f"no ONNX text export for {type(model).__name__}")


def query_encoder(model: Any) -> Callable[[Sequence[str]], np.ndarray] | None:
    """The fast query encoder of `model` when TRAFFICSEARCH_QUERY_ENCODER=onnx and it can be exported, else
    None (the caller uses model.encode_texts). Built once per model object."""
    if backend() != "onnx" or str(getattr(model, "device", "cpu")) != "cpu":
        return None
    try:
        with _lock:
            if model not in _encoders:
                try:
                    _encoders[model] = OnnxTextEncoder(model)
                except TypeError:
                    _encoders[model] = None  # not a tower we export: PyTorch as before
                except Exception as exc:  # noqa: BLE001 - any exporter failure keeps the working path
                    log.warning("ONNX export of %s failed (%s); encoding queries with PyTorch", model, exc)
                    _encoders[model] = None
            return _encoders[model]
    except TypeError:  # not weak-referenceable
        return None


class _BlipItm(nn.Module):
    """(ids, mask, image tokens) -> BLIP ITM logits [N, 2] (`[ENC]` written over `[CLS]` inside)."""

    def __init__(self, blip: nn.Module) -> None:
        super().__init__()
        self.blip = blip

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tokens: torch.Tensor
    ) -> torch.Tensor:
        return self.blip.itm_logits(input_ids, attention_mask, tokens)


class OnnxItmHead:
    """BLIP's ITM head (text encoder with cross-attention over stored image tokens) in ONNX Runtime:
    `itm_scores_tokens` of BlipRetrieval, pair i = text i with image tokens i."""

    def __init__(self, blip: Any, threads: int | None = None, precision: str = "fp32") -> None:
        ort = _onnxruntime()

        self.blip = weakref.proxy(blip)
        tok = blip.tokenizer(["a red car", "a pedestrian in a white shirt"])
        width = int(blip.hf.config.vision_config.hidden_size)
        size = int(blip.image_size) // int(blip.hf.config.vision_config.patch_size)
        tokens = torch.zeros(2, size * size + 1, width)
        graph = export_onnx(
            _BlipItm(blip),
            (tok.input_ids, tok.attention_mask, tokens),
            mode=blip,
            input_names=["input_ids", "attention_mask", "tokens"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "pairs", 1: "length"},
                "attention_mask": {0: "pairs", 1: "length"},
                "tokens": {0: "pairs", 1: "image_tokens"},
            },
        )
        self.precision = check_itm_choice(precision, "precision")
        self.graph = quantized_int8(graph) if self.precision == "int8" else graph
        self.session = ort_session(ort, self.graph, threads)

    def __call__(
        self,
        texts: Sequence[str],
        image_tokens: torch.Tensor,
        *,
        probabilities: bool = False,
        batch_size: int = 128,
    ) -> torch.Tensor:
        texts = list(texts)
        if not texts:
            return torch.zeros(0)
        # each distinct text tokenized once (a query meets its K candidates); pairs run in length buckets,
        # each trimmed to its longest text (a micro-batch of mixed queries is not padded to its longest)
        distinct = list(dict.fromkeys(texts))
        where = {text: i for i, text in enumerate(distinct)}
        which = np.array([where[t] for t in texts])
        tok = self.blip.tokenizer(distinct)
        ids = tok.input_ids.numpy().astype(np.int64)
        mask = tok.attention_mask.numpy().astype(np.int64)
        lengths = mask.sum(axis=1)[which]
        tokens = image_tokens.float().numpy()
        order = np.argsort(lengths, kind="stable")
        logits = np.empty((len(texts), 2), np.float32)
        for run in length_buckets(lengths[order], batch_size):
            rows = order[run]
            width = int(lengths[rows].max())
            feed = {
                "input_ids": np.ascontiguousarray(ids[which[rows], :width]),
                "attention_mask": np.ascontiguousarray(mask[which[rows], :width]),
                "tokens": np.ascontiguousarray(tokens[rows]),
            }
            logits[rows] = self.session.run(None, feed)[0]
        out = torch.from_numpy(logits)
        return out.softmax(-1)[:, 1] if probabilities else out[:, 1]


def quantized_int8(graph: bytes) -> bytes:
    """`graph` with its MatMul weights dynamically quantised to int8 (per channel), by ONNX Runtime's
    quantiser (which reads and writes files)."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="trafficsearch-int8-") as tmp:
        fp32, int8 = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        with open(fp32, "wb") as handle:
            handle.write(graph)
        root = logging.getLogger()  # the quantiser logs its "consider pre-processing" advice there
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
        with open(int8, "rb") as handle:
            return handle.read()


_itm: weakref.WeakKeyDictionary[Any, dict[str, OnnxItmHead | None]] = weakref.WeakKeyDictionary()


def itm_head(model: Any) -> OnnxItmHead | None:
    """The ONNX ITM head of a BLIP model when TRAFFICSEARCH_QUERY_ENCODER=onnx, in the precision of
    $TRAFFICSEARCH_ITM_HEAD (else, or on failure, None). Built once per model and precision."""
    if (
        backend() != "onnx"
        or not hasattr(model, "itm_logits")
        or str(getattr(model, "device", "cpu")) != "cpu"
    ):
        return None
    precision = itm_precision()
    with _lock:
        heads = _itm.setdefault(model, {})
        if precision not in heads:
            try:
                heads[precision] = OnnxItmHead(model, precision=precision)
            except Exception as exc:  # noqa: BLE001 - any exporter failure keeps the working path
                log.warning("ONNX export of the ITM head failed (%s); re-ranking with PyTorch", exc)
                heads[precision] = None
        return heads[precision]
