"""Cold query encoding on the CPU: PyTorch fp32 (before) vs ONNX Runtime (models/onnx_text.py) vs PyTorch
dynamic int8 vs ONNX Runtime dynamic int8 (per-channel weights), for the demo default CLIP text tower
(pretrained MiniLM-L6 trunk) and BLIP-small's text encoder (random init: same cost), on the real val texts
(packaged labels), in one run.

    .venv/bin/python benchmarks/query_encode.py [--texts 10000] [--timed 60]

Speed: distinct texts one per call (a cold service query), interleaved per text; queries/s = 1000 / p50 ms;
and batches of 32 distinct texts (what the service's micro-batcher hands the encoder under load).
Fidelity: cosine to fp32 over the texts, and top-10 overlap of each text's ranking of a gallery made of the
fp32 embeddings of all the texts (a stand-in for image vectors in the joint space). Prints a table; writes
benchmarks/results/query_encode.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from trafficsearch.benchmarking import machine_info
from trafficsearch.data.labels import read_labels
from trafficsearch.ioutil import atomic_write_json, atomic_write_text
from trafficsearch.models.onnx_text import OnnxTextEncoder, quantized_int8, text_tower_graph
from trafficsearch.resources import extract_val_labels

RESULTS = Path(__file__).parent / "results"


def val_texts(n: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        records = read_labels(extract_val_labels(Path(tmp) / "val.txt")).records
    texts = list(dict.fromkeys(r.text for r in records))
    return texts[:: max(1, len(texts) // n)][:n]


def int8_copy(model):
    """A copy of `model` whose text tower's Linear layers are dynamically quantized to int8."""
    from trafficsearch.models.blip import BlipRetrieval

    warnings.filterwarnings("ignore")
    if isinstance(model, BlipRetrieval):
        q = copy.deepcopy(model)
        torch.ao.quantization.quantize_dynamic(q.hf.text_encoder, {nn.Linear}, torch.qint8, inplace=True)
        return q
    q = copy.copy(model)
    q.model = copy.deepcopy(model.model)
    torch.ao.quantization.quantize_dynamic(q.model.text, {nn.Linear}, torch.qint8, inplace=True)
    return q


def onnx_int8(model) -> OnnxTextEncoder:
    """ONNX Runtime over the tower's graph with its MatMul weights dynamically quantised to int8 (the same
    quantiser as the opt-in int8 ITM head)."""
    return OnnxTextEncoder(model, graph=quantized_int8(text_tower_graph(model)))


def encode_all(fn, texts: list[str]) -> np.ndarray:
    return np.concatenate([np.asarray(fn(texts[i : i + 256]), np.float32) for i in range(0, len(texts), 256)])


def top10(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    scores = queries @ gallery.T
    return np.argpartition(-scores, 10, axis=1)[:, :10]


def run_model(name: str, model, texts: list[str], timed: int) -> list[dict]:
    with torch.no_grad():
        variants = {
            "torch fp32 (before)": lambda t: model.encode_texts(t).float().numpy(),
            "ONNX Runtime": OnnxTextEncoder(model),
        }
        q8 = int8_copy(model)
        variants["torch int8 dynamic"] = lambda t: q8.encode_texts(t).float().numpy()
        variants["ONNX Runtime int8 dynamic"] = onnx_int8(model)
        vectors = {k: encode_all(fn, texts) for k, fn in variants.items()}
        sample = texts[:: max(1, len(texts) // timed)][:timed]
        times: dict[str, list[float]] = {k: [] for k in variants}
        for text in [sample[0], *sample]:
            for k, fn in variants.items():
                start = time.perf_counter()
                fn([text])
                times[k].append((time.perf_counter() - start) * 1000)
        spread = texts[:: max(1, len(texts) // 320)][:320]  # vehicle and pedestrian texts mixed
        batches = [spread[i : i + 32] for i in range(0, len(spread), 32)]
        batch_ms: dict[str, list[float]] = {k: [] for k in variants}
        for batch in [batches[0], *batches]:
            for k, fn in variants.items():
                start = time.perf_counter()
                fn(batch)
                batch_ms[k].append((time.perf_counter() - start) * 1000)
    base = vectors["torch fp32 (before)"]
    truth = top10(base[:1000], base)
    base_ms = float(np.median(times["torch fp32 (before)"][1:]))
    rows = []
    for k, v in vectors.items():
        cos = (v * base).sum(axis=1) / np.linalg.norm(v, axis=1) / np.linalg.norm(base, axis=1)
        found = top10(v[:1000], base)
        overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)]))
        ms = float(np.median(times[k][1:]))
        rows.append(
            {
                "model": name,
                "encoder": k,
                "p50_ms": ms,
                "batch32_ms": float(np.median(batch_ms[k][1:])),
                "qps": 1000.0 / ms,
                "speedup": base_ms / ms,
                "cos_min": float(cos.min()),
                "cos_mean": float(cos.mean()),
                "top10_overlap": overlap,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=10_000, help="val texts for the fidelity columns")
    parser.add_argument("--timed", type=int, default=60, help="distinct texts timed one per call")
    args = parser.parse_args()
    from trafficsearch.models.blip import create_blip
    from trafficsearch.models.factory import load_model

    console = Console(width=100)
    texts = val_texts(args.texts)
    torch.manual_seed(0)
    rows = run_model("CLIP MiniLM", load_model("open_clip:ts-minilm-vit-s64"), texts, args.timed)
    rows += run_model("BLIP-small", create_blip("blip-small", seed=0).eval(), texts, args.timed)
    table = Table(title=f"cold query encoding, {len(texts)} distinct val texts, torch threads "
                  f"{torch.get_num_threads()}")  # fmt: skip
    columns = ("model", "encoder", "p50 ms", "q/s", "x fp32", "32/call ms", "cos min", "cos mean", "top-10")
    for column in columns:
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["model"], r["encoder"], f"{r['p50_ms']:.1f}", f"{r['qps']:.0f}", f"{r['speedup']:.2f}",
            f"{r['batch32_ms']:.1f}", f"{r['cos_min']:.5f}", f"{r['cos_mean']:.5f}",
            f"{r['top10_overlap']:.3f}",
        )  # fmt: skip
    console.print(table)
    m = machine_info()
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        RESULTS / "query_encode.json",
        {"benchmark": "query_encode", "args": vars(args), "texts": len(texts), "rows": rows, "machine": m},
    )
    lines = [
        "# Cold query encoding",
        "",
        f"{len(texts)} distinct real val texts (packaged labels). Speed: {args.timed} distinct texts, one "
        "per call, encoders interleaved per text; q/s = 1000 / p50. cos: cosine to PyTorch fp32; top-10: "
        "overlap of each text's top 10 over a gallery of the fp32 embeddings of all texts (first 1,000). "
        "32 per call: median over 10 batches of 32 distinct texts spread over the file. "
        "BLIP-small has random weights (same cost as trained).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores (shared; load average {os.getloadavg()[0]:.1f}), "
        f"torch {m['torch']} ({m.get('torch_threads')} threads).",
        "",
        "| model | encoder | p50 ms | q/s | x fp32 | 32 per call ms | cos min | cos mean | top-10 overlap |",
        "|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['model']} | {r['encoder']} | {r['p50_ms']:.1f} | {r['qps']:.0f} | {r['speedup']:.2f} | "
            f"{r['batch32_ms']:.1f} | {r['cos_min']:.5f} | {r['cos_mean']:.5f} | {r['top10_overlap']:.3f} |"
            for r in rows
        ],
        "",
    ]
    atomic_write_text(RESULTS / "query_encode.md", "\n".join(lines))


if __name__ == "__main__":
    main()
