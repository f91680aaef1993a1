"""ITM re-ranking latency added per cold query (K candidates): encoding the candidates at query time (decode
+ BLIP ViT, as before) vs reading their stored image tokens (index/itm_tokens.py), same queries, same
candidates, interleaved query by query in one run. The model is the demo's BLIP (`blip-small-minilm3`, what
configs/demo/blip-small.yaml fine-tunes from package:blip-small) with random weights: the same cost as the
trained one.

    .venv/bin/python benchmarks/rerank_latency.py [--images 500] [--queries 40] [--k 10] \
        [--config blip-small-minilm3]

Queries are real validation texts (packaged labels); each query's K candidates are drawn at random from a
gallery of traffic-crop-like JPEGs. The same run counts the ITM head's FLOPs for those texts (torch's
FlopCounterMode over the head) and times one matmul of the head's feed-forward shape (its largest) in
numpy and in ONNX Runtime at the same threads: the head's time if every FLOP ran at the faster one's rate
is a floor for it in fp32 on this CPU. Prints a table; writes benchmarks/results/rerank_latency.{json,md}
(or --out STEM).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from encode import make_images
from trafficsearch.benchmarking import machine_info
from trafficsearch.data.labels import read_labels
from trafficsearch.index import build_index
from trafficsearch.index.itm_tokens import write_itm_tokens
from trafficsearch.index.store import open_index
from trafficsearch.ioutil import atomic_write_json, atomic_write_text
from trafficsearch.models import onnx_text
from trafficsearch.resources import extract_val_labels
from trafficsearch.search.rerank import ItmRerankStage
from trafficsearch.search.stages import Candidates
from trafficsearch.testing.color import ColorModel

RESULTS = Path(__file__).parent / "results"


def val_texts(n: int, tmp: Path) -> list[str]:
    texts = list(dict.fromkeys(r.text for r in read_labels(extract_val_labels(tmp / "val.txt")).records))
    return [texts[i] for i in np.linspace(0, len(texts) - 1, n).astype(int)]


def itm_head_flops(blip: Any, texts: list[str], k: int, image_tokens: tuple[int, int]) -> float:
    """Mean FLOPs of one query's ITM head (its text against K candidates' image tokens), counted by torch's
    FlopCounterMode over the PyTorch head (the graph ONNX Runtime runs is exported from it)."""
    from torch.utils.flop_counter import FlopCounterMode

    tokens = torch.zeros(k, *image_tokens)
    total = 0
    for text in texts:
        tok = blip.tokenizer([text] * k)
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            blip.itm_logits(tok.input_ids, tok.attention_mask, tokens)
        total += counter.get_total_flops()
    return total / len(texts)


def gemm_gflops(rows: int, hidden: int, inner: int, repeats: int = 30) -> dict[str, float]:
    """float32 GFLOP/s of [rows, hidden] @ [hidden, inner] (the head's feed-forward shape) on this host:
    numpy's BLAS, and ONNX Runtime's MatMul alone (the kernel the ONNX head runs), same threads."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, hidden), dtype=np.float32)
    b = rng.standard_normal((hidden, inner), dtype=np.float32)
    spec = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [spec("a", TensorProto.FLOAT, [rows, hidden]), spec("b", TensorProto.FLOAT, [hidden, inner])],
        [spec("c", TensorProto.FLOAT, [rows, inner])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = onnx_text.ort_session(ort, model.SerializeToString())
    calls = {"numpy": lambda: a @ b, "onnxruntime": lambda: session.run(None, {"a": a, "b": b})}
    out = {}
    for name, call in calls.items():
        call()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        out[name] = 2.0 * rows * hidden * inner / float(np.min(times)) / 1e9
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--config", default="blip-small-minilm3", help="packaged BLIP config (random init); the demo's"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "rerank_latency", help="results stem")
    args = parser.parse_args()
    from trafficsearch.models.blip import create_blip

    console = Console()
    torch.manual_seed(0)
    blip = create_blip(args.config, seed=0).eval()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        make_images(tmp / "g", args.images)
        build_index(tmp / "g", tmp / "idx", ColorModel(), workers=0, progress=False)  # rows + paths only
        data = open_index(tmp / "idx")
        live = ItmRerankStage(blip, data, k=args.k, form="seed")
        start = time.perf_counter()
        entry = write_itm_tokens(tmp / "idx", blip, progress=False)
        write_s = time.perf_counter() - start
        data = open_index(tmp / "idx")
        stored = ItmRerankStage(blip, data, k=args.k, form="seed")
        assert live.stored is None and stored.stored is not None
        texts = val_texts(args.queries, tmp)
        names = ("encode at query time", "stored tokens", "stored tokens + ONNX ITM head")
        times: dict[str, list[float]] = {name: [] for name in names}
        os.environ.pop(onnx_text.ENV, None)
        os.environ[onnx_text.ENV] = "onnx"
        assert onnx_text.itm_head(blip) is not None
        os.environ.pop(onnx_text.ENV)
        worst = 0.0
        for text in [texts[0], *texts]:  # the first is a warm-up, dropped
            rows = rng.choice(data.count, args.k, replace=False)
            cand = Candidates(rows.astype(np.int64), np.linspace(1, 0.5, args.k).astype(np.float32))
            out = {}
            for name, stage in zip(names, (live, stored, stored), strict=True):
                if "ONNX" in name:
                    os.environ[onnx_text.ENV] = "onnx"
                with stage.pixels.cold():
                    t0 = time.perf_counter()
                    out[name] = stage([text], [cand])[0]
                    times[name].append((time.perf_counter() - t0) * 1000)
                os.environ.pop(onnx_text.ENV, None)
            for name in names[1:]:
                diff = np.abs(out[name].scores - out["encode at query time"].scores).max()
                worst = max(worst, float(diff))
        per_image = int(np.prod(entry["shape"][1:])) * 2
        lengths = blip.tokenizer(texts).attention_mask.sum(dim=1).float()
    text_config = blip.hf.config.text_config
    length = float(lengths.mean())
    flops = itm_head_flops(blip, texts, args.k, tuple(entry["shape"][1:]))
    gemm = gemm_gflops(
        int(round(args.k * length)), int(text_config.hidden_size), int(text_config.intermediate_size)
    )
    gflops = max(gemm.values())
    floor_ms = flops / gflops / 1e6
    rows = []
    base = float(np.median(times["encode at query time"][1:]))
    for name, values in times.items():
        p50 = float(np.median(values[1:]))
        rows.append(
            {"method": name, "p50_ms": p50, "mean_ms": float(np.mean(values[1:])), "speedup": base / p50}
        )
    table = Table(title=f"ITM re-rank added latency per cold query, K={args.k}, {args.config} (random init)")
    for column in ("method", "p50 ms", "mean ms", "x encode"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["method"], f"{r['p50_ms']:.1f}", f"{r['mean_ms']:.1f}", f"{r['speedup']:.2f}")
    console.print(table)
    onnx_p50 = rows[-1]["p50_ms"]
    floor = (
        f"ITM head: {flops / 1e9:.2f} GFLOP per query (K={args.k}, {length:.1f} text tokens on average); "
        f"one matmul of its feed-forward shape at these threads ran at {gemm['numpy']:.0f} GFLOP/s in "
        f"numpy, {gemm['onnxruntime']:.0f} in ONNX Runtime (best of 30), so the head needs at least "
        f"{floor_ms:.1f} ms in fp32 on this host; its whole ONNX stage ran at "
        f"{flops / onnx_p50 / 1e6:.0f} GFLOP/s ({onnx_p50:.1f} ms p50)."
    )
    console.print(floor)
    console.print(
        f"tokens: {entry['shape'][1:]} fp16 = {per_image:,} bytes per image; written at "
        f"{args.images / write_s:.0f} images/s; max |score difference| {worst:.2e}"
    )
    m = machine_info()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        args.out.with_suffix(".json"),
        {
            "benchmark": "rerank_latency",
            "args": {**vars(args), "out": str(args.out)},
            "rows": rows,
            "token_shape": entry["shape"][1:],
            "bytes_per_image": per_image,
            "write_images_per_s": args.images / write_s,
            "max_score_diff": worst,
            "itm_gflop_per_query": flops / 1e9,
            "mean_text_tokens": length,
            "gemm_gflops": gemm,
            "fp32_floor_ms": floor_ms,
            "machine": m,
            "load_average": os.getloadavg()[0],
        },
    )
    lines = [
        "# ITM re-rank latency",
        "",
        f"Added latency of ITM re-ranking per cold query (K={args.k}, form seed, one query per call, "
        f"{args.queries} real val texts, candidates drawn from {args.images} traffic-crop-like JPEGs), "
        f"`{args.config}` with random weights. 'encode at query time' decodes the K images and runs the ViT "
        "(what every cold query paid before); 'stored tokens' reads them from the index "
        "(`ensemble index` writes them for the re-ranker's member); '+ ONNX ITM head' also runs the ITM head "
        "in ONNX Runtime (TRAFFICSEARCH_QUERY_ENCODER=onnx). Interleaved per query, one run.",
        "",
        f"Tokens: {entry['shape'][1]} x {entry['shape'][2]} fp16 = {per_image:,} bytes per image; "
        f"written at {args.images / write_s:.0f} images/s; largest score difference {worst:.1e}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores (shared; load average {os.getloadavg()[0]:.1f}), "
        f"torch {m['torch']} ({m.get('torch_threads')} threads).",
        "",
        f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} "
        f"benchmarks/rerank_latency.py --images {args.images} --queries {args.queries} --k {args.k} "
        f"--config {args.config}"
        + (f" --out {args.out}" if args.out != RESULTS / "rerank_latency" else "")
        + "`",
        "",
        "| method | p50 ms | mean ms | x encode |",
        "|---|---|---|---|",
        *[f"| {r['method']} | {r['p50_ms']:.1f} | {r['mean_ms']:.1f} | {r['speedup']:.2f} |" for r in rows],
        "",
        floor,
        "",
    ]
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines))


if __name__ == "__main__":
    main()
