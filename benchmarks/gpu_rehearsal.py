"""One-GPU rehearsal of the seed's four trainings, index encoding and ITM re-ranking (< 8 min on an H200).

    benchmarks/gpu_rehearsal.sh                     # = python benchmarks/gpu_rehearsal.py --device cuda
    python benchmarks/gpu_rehearsal.py --tiny --device cpu   # tiny configs, a couple of steps (the test)

Random weights, nothing downloaded. Per configs/seed/*.yaml, at the seed's GLOBAL batch on one device:
- vit-h-14-a: ViT-H-14, everything trained, pure bf16 (weights bf16, no autocast, no scaler), batch 128;
- vit-h-14-b: ViT-H-14, image tower locked but its last 5 groups, fp16 autocast + GradScaler, batch 480;
- xlm-roberta-large-vit-h-14: as B with a random-init XLM-R-large text tower built from a local
  transformers.XLMRobertaConfig (tokenizer: the cached `xlm-roberta-large` one, else random token ids of
  the context length, an upper bound on the text cost), batch 320;
- blip-large: ViT-L/16 + BERT-base BLIP, ITC + hard-negative ITM with the config's momentum encoders,
  momentum distillation and 57,600-entry ITC queue (train/blip_momentum.py), fp32, gradient checkpointing
  as the seed config, batch 96.
Each runs the project's training step (train.optim.Stepper with the config's task, optimiser, precision);
a config that runs out of memory is retried once with gradient checkpointing. Then `build_index` (the
`trafficsearch index` path: DataLoader workers, shards, FAISS merge) of 2,000 JPEGs with strategy B's
model, and ItmRerankStage (the `submit --rerank` path) with the BLIP model over that index.
Reports samples/s, peak GiB (torch.cuda.max_memory_allocated; peak RSS on CPU) and whether it fits, into
benchmarks/results/gpu_rehearsal.{json,md} (--tiny: gpu_rehearsal_tiny.*). Every part has a time box and
the whole run a budget: parts past it are recorded as skipped, and the results file is rewritten after
every part, so an interrupted run still leaves one.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
TRAIN_CONFIGS = ("vit-h-14-a", "vit-h-14-b", "xlm-roberta-large-vit-h-14", "blip-large")
PARTS = (*TRAIN_CONFIGS, "encode", "rerank")
# seconds per part on a GPU (sum 420 < 480); a part also stops at the run's budget
PART_BUDGET = {
    "vit-h-14-a": 70,
    "vit-h-14-b": 70,
    "encode": 75,
    "xlm-roberta-large-vit-h-14": 80,
    "blip-large": 75,
    "rerank": 50,
}
# the order parts run in: encode reuses strategy B's model, rerank the BLIP model
ORDER = ("vit-h-14-a", "vit-h-14-b", "encode", "xlm-roberta-large-vit-h-14", "blip-large", "rerank")
XLMR_LARGE = {  # xlm-roberta-large's architecture (its Hugging Face config.json)
    "vocab_size": 250002,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "layer_norm_eps": 1e-5,
}
XLMR_TINY = {**XLMR_LARGE, "vocab_size": 1000, "hidden_size": 32, "num_hidden_layers": 2}
XLMR_TINY.update(num_attention_heads=2, intermediate_size=64, max_position_embeddings=80)


class Clock:
    """The run's budget and each part's time box."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.deadline = self.start + budget_s

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def box(self, seconds: float) -> float:
        """A deadline for a part: `seconds` from now, never past the run's budget."""
        return min(self.deadline, time.perf_counter() + seconds)


# -- devices and memory --------------------------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak(device: torch.device) -> dict[str, Any]:
    """GPU: max allocated since the part began; CPU: the process's peak RSS so far (monotonic)."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        used = torch.cuda.max_memory_allocated(device)
        return {"peak_gib": round(used / 2**30, 2), "fits": bool(used < total)}
    return {
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "fits": None,
    }


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device.type, "cuda": device.type == "cuda"}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, total_gib=round(props.total_memory / 2**30, 1))
    return info


# -- models (random init, built from local configs) ----------------------------------------------------------
class RandomTokens:
    """Stands in for a tokenizer that is not cached: uniform ids of the full context (no padding)."""

    def __init__(self, vocab: int, context: int = 77, pad: int = 1, seed: int = 0) -> None:
        self.vocab, self.context, self.pad = vocab, context, pad
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, texts: list[str]) -> torch.Tensor:
        ids = torch.randint(3, self.vocab, (len(texts), self.context), generator=self.gen)
        return torch.where(ids == self.pad, ids + 1, ids)


def xlmr_tokenizer(tiny: bool) -> tuple[Any, str]:
    if not tiny:
        try:
            from open_clip.tokenizer import HFTokenizer

            return HFTokenizer("xlm-roberta-large", context_length=77), "cached xlm-roberta-large"
        except Exception:  # noqa: BLE001 - any load failure means: not cached here
            pass
    cfg = XLMR_TINY if tiny else XLMR_LARGE
    return RandomTokens(cfg["vocab_size"]), "random token ids (tokenizer not cached)"


def build_xlmr_clip(tiny: bool, work: Path) -> tuple[Any, str]:
    """open_clip's xlm-roberta-large-ViT-H-14 (tiny: ts-tiny-test's vision) with a random-init XLM-R text
    tower created from a local config folder, so transformers never reaches for the network."""
    import open_clip
    from transformers import XLMRobertaConfig

    from trafficsearch.data.transforms import Preprocess
    from trafficsearch.models import registry
    from trafficsearch.models.clip import OpenClipModel

    folder = work / ("xlmr-tiny" if tiny else "xlmr-large")
    XLMRobertaConfig(**(XLMR_TINY if tiny else XLMR_LARGE)).save_pretrained(folder)
    cfg = json.loads(json.dumps(registry.get_model_config("xlm-roberta-large-ViT-H-14")))
    if tiny:
        tiny_cfg = registry.get_model_config("ts-tiny-test")
        cfg["vision_cfg"], cfg["embed_dim"] = tiny_cfg["vision_cfg"], tiny_cfg["embed_dim"]
    cfg["text_cfg"].update(hf_model_name=str(folder), hf_tokenizer_name=str(folder))
    name = "ts-rehearsal-xlmr-tiny" if tiny else "ts-rehearsal-xlmr-h14"
    registry.register_model_config(name, cfg)
    model = open_clip.create_model(name, pretrained=None, pretrained_text=False, device="cpu")
    tokenizer, how = xlmr_tokenizer(tiny)
    size = int(cfg["vision_cfg"]["image_size"])
    wrapped = OpenClipModel(
        model,
        tokenizer,
        name="xlm-roberta-large-ViT-H-14" + (" (tiny)" if tiny else ""),
        model_cfg=cfg,
        preprocess=Preprocess(kind="pad", image_size=size),
        source={"pretrained": None, "checkpoint": None, "weights_sha256": None},
    )
    return wrapped, how


def blip_large_config(work: Path) -> Path:
    """BLIP w/ ViT-L/16 at 224 px + BERT-base: the packaged BLIP-large architecture at the seed's size."""
    from trafficsearch.models.blip import BLIP_LARGE_ARCHITECTURE as large

    path = work / "blip-large-random.json"
    spec = {
        "description": "BLIP-large architecture, random init (rehearsal)",
        "blip_config": {**large, "vision_config": {**large["vision_config"], "image_size": 224}},
        "preprocess": {"kind": "pad", "image_size": 224},
        "tokenizer": {"source": "@minilm", "max_length": 100},
    }
    path.write_text(json.dumps(spec))
    return path


# -- the parts -----------------------------------------------------------------------------------------------
def train_config(name: str, tiny: bool, device: torch.device, work: Path, checkpointing: bool | None):
    from trafficsearch.train.config import load_config

    overrides = [f"train.device={device.type}", "model.pretrained=null", "data.workers=0"]
    if tiny:
        overrides += ["train.batch_size=8"]
        overrides += ["model.name=blip-tiny" if name == "blip-large" else "model.name=ts-tiny-test"]
    elif name == "blip-large":
        overrides += [f"model.name={blip_large_config(work)}"]
    if checkpointing is not None:
        overrides += [f"train.grad_checkpointing={str(checkpointing).lower()}"]
    return load_config(REPO / "configs" / "seed" / f"{name}.yaml", overrides)


def make_task(name: str, cfg: Any, tiny: bool, device: torch.device, work: Path) -> tuple[Any, dict]:
    from trafficsearch.train.loop import build_task

    if name == "xlm-roberta-large-vit-h-14":
        from trafficsearch.train.clip_task import ClipTask

        wrapped, how = build_xlmr_clip(tiny, work)
        return ClipTask(wrapped, cfg, device), {"tokenizer": how}
    return build_task(cfg, device), {}


def train_part(
    name: str, args: argparse.Namespace, device: torch.device, deadline: float, keep: dict
) -> dict:
    """A few training steps at the config's batch; one retry with gradient checkpointing after an OOM."""
    try:
        return _train_once(name, args, device, deadline, keep, None)
    except torch.OutOfMemoryError:
        pass  # leave the except block first: its traceback holds the failed step's tensors
    keep.pop("clip" if name == "vit-h-14-b" else "blip", None)
    reset_peak(device)
    if train_config(name, args.tiny, device, args.work, None).train.grad_checkpointing:
        return {"status": "oom", **peak(device)}
    try:
        row = _train_once(name, args, device, deadline, keep, True)
    except torch.OutOfMemoryError:
        row = {"status": "oom (also with gradient checkpointing)"}
    if row["status"] == "ok":
        row["note"] = "out of memory without gradient checkpointing; this row is with it"
    else:
        reset_peak(device)
    return row


def _train_once(
    name: str,
    args: argparse.Namespace,
    device: torch.device,
    deadline: float,
    keep: dict,
    checkpointing: bool | None,
) -> dict:
    from trafficsearch.data.records import Record
    from trafficsearch.train.dist import DistInfo
    from trafficsearch.train.optim import Stepper
    from trafficsearch.train.task import Batch

    reset_peak(device)
    cfg = train_config(name, args.tiny, device, args.work, checkpointing)
    batch = cfg.train.batch_size
    torch.manual_seed(0)
    t0 = time.perf_counter()
    task, extra = make_task(name, cfg, args.tiny, device, args.work)
    stepper = Stepper(task, cfg, device, DistInfo(), total_steps=args.steps + 2)
    build_s = time.perf_counter() - t0
    size = task.preprocess.image_size
    pixels = torch.randn(batch, 3, size, size, device=device)
    colours = ("red", "blue", "white", "black", "grey", "green")
    texts = [f"A {colours[i % 6]} car with the number {i} on its door." for i in range(batch)]
    records = [Record(image=f"{i}.jpg", kind="vehicle", attributes="", text=t) for i, t in enumerate(texts)]
    b = Batch(pixels, texts, records, torch.arange(batch, device=device))
    task.train_mode()
    stepper.step(b, 0)  # warm-up: allocations, autotuning, the scaler's first scale
    sync(device)
    steps, start = 0, time.perf_counter()
    while steps < args.steps and (steps == 0 or time.perf_counter() < deadline):
        loss = stepper.step(b, steps + 1)["loss"]
        steps += 1
    sync(device)
    seconds = time.perf_counter() - start
    row = {
        "config": name,
        "status": "ok",
        "model": getattr(getattr(task, "wrapped", None), "name", None) or cfg.model.name,
        "precision": cfg.train.precision,
        "batch": batch,
        "trainable_m": round(sum(p.numel() for p in task.module.parameters() if p.requires_grad) / 1e6, 1),
        "grad_checkpointing": bool(cfg.train.grad_checkpointing),
        "steps": steps,
        "step_s": round(seconds / steps, 3),
        "samples_per_s": round(batch * steps / seconds, 1),
        "loss_finite": bool(torch.isfinite(torch.as_tensor(loss)).item()),
        "build_s": round(build_s, 1),
        **extra,
        **peak(device),
    }
    del stepper
    for p in task.module.parameters():
        p.grad = None  # a kept model must not hold the last step's gradients into the next part
    if name == "vit-h-14-b":
        keep["clip"] = task.wrapped  # encoded with next (fp32 weights, as the index path loads them)
    if name == "blip-large":
        keep["blip"] = task.model
    return row


def write_gallery(folder: Path, n: int) -> None:
    """The rehearsal's cheap crops (benchmarks/real_scale.py), half vehicles, half pedestrians."""
    import numpy as np

    spec = importlib.util.spec_from_file_location("real_scale", Path(__file__).parent / "real_scale.py")
    assert spec and spec.loader
    real_scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real_scale)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        w, h = real_scale.sizes(rng, "vehicle" if i % 2 else "pedestrian")
        real_scale.cheap_image(rng, w, h).save(folder / f"{i:06d}.jpg", quality=90)


def encode_part(args: argparse.Namespace, device: torch.device, deadline: float, keep: dict) -> dict:
    from trafficsearch.index.build import build_index

    model = keep.get("clip")
    if model is None:
        return {"status": "skipped (no strategy-B model: that part did not finish)"}
    n = args.encode_images
    gallery = args.work / "gallery"
    t0 = time.perf_counter()
    write_gallery(gallery, n)
    gallery_s = time.perf_counter() - t0
    reset_peak(device)
    t0 = time.perf_counter()
    model.manifest()  # the fingerprint build_index takes first (a digest of every weight)
    manifest_s = time.perf_counter() - t0
    batch = 16 if args.tiny else 256
    start = time.perf_counter()
    result = build_index(
        gallery,
        args.work / "index",
        model,
        model_spec="open_clip:" + model.name,
        batch_size=batch,
        workers=args.workers,
        device=device.type,
        progress=False,
    )
    seconds = time.perf_counter() - start
    count = int(result.manifest["count"]) if result.manifest else 0
    return {
        "status": "ok" if count == n else f"indexed {count} of {n}",
        "model": model.name,
        "images": count,
        "batch": batch,
        "workers": args.workers,
        "wall_s": round(seconds, 1),
        "images_per_s": round(count / seconds, 1),
        "fingerprint_s": round(manifest_s, 1),
        "images_per_s_without_fingerprint": round(count / max(seconds - manifest_s, 1e-9), 1),
        "gallery_write_s": round(gallery_s, 1),
        "over_time_box": time.perf_counter() > deadline,
        **peak(device),
    }


def rerank_part(args: argparse.Namespace, device: torch.device, deadline: float, keep: dict) -> dict:
    import numpy as np

    from trafficsearch.index.store import open_index
    from trafficsearch.search.rerank import ItmRerankStage
    from trafficsearch.search.stages import Candidates

    model = keep.get("blip")
    if model is None or not (args.work / "index" / "manifest.json").is_file():
        return {"status": "skipped (needs the BLIP part and the encode part's index)"}
    model.eval()
    data = open_index(args.work / "index")
    k, queries = 10, args.rerank_queries
    rng = np.random.default_rng(0)
    texts = [f"A pedestrian number {i} in a red shirt, carrying a backpack." for i in range(queries)]
    heads = [
        Candidates(
            rng.choice(data.count, size=min(k, data.count), replace=False).astype(np.int64),
            np.sort(rng.random(min(k, data.count)).astype(np.float32))[::-1].copy(),
        )
        for _ in texts
    ]
    reset_peak(device)
    stage = ItmRerankStage(model, data, k=k, batch_size=128)
    start = time.perf_counter()
    out = stage(texts, heads)
    sync(device)
    seconds = time.perf_counter() - start
    same = all(sorted(a.rows.tolist()) == sorted(b.rows.tolist()) for a, b in zip(out, heads, strict=True))
    pairs = sum(len(h.rows) for h in heads)
    return {
        "status": "ok" if same else "rows changed",
        "model": getattr(model, "name", "blip"),
        "queries": queries,
        "k": k,
        "pairs": pairs,
        "distinct_images": len({int(r) for h in heads for r in h.rows}),
        "wall_s": round(seconds, 2),
        "pairs_per_s": round(pairs / seconds, 1),
        "queries_per_s": round(queries / seconds, 1),
        "over_time_box": time.perf_counter() > deadline,
        **peak(device),
    }


# -- results -------------------------------------------------------------------------------------------------
def markdown(result: dict[str, Any]) -> str:
    dev = result["device"]
    where = f"{dev.get('name')} ({dev.get('total_gib')} GiB)" if dev["cuda"] else "CPU"
    mem = "peak GiB" if dev["cuda"] else "peak RSS GiB"
    lines = [
        f"# GPU rehearsal{' (--tiny)' if result['tiny'] else ''}: {where}",
        "",
        f"Command: `{result['command']}`; total {result['total_s']:.0f} s of a {result['budget_s']:.0f} s "
        f"budget. Machine: {result['machine'].get('cpu')}, {result['machine'].get('cores')} cores, "
        f"torch {result['machine'].get('torch')}.",
    ]
    if not dev["cuda"]:
        lines += [
            "",
            "**Not a GPU run**: tiny models on the CPU prove the script end to end; the numbers say "
            "nothing about GPU speed. Run `benchmarks/gpu_rehearsal.sh` on a GPU machine for the real ones.",
        ]
    lines += [
        "",
        "## Training steps (random init, seed configs, global batch on one device)",
        "",
        f"| config | status | precision | batch | ckpt | trainable M | steps | samples/s | {mem} | fits |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in result["train"]:
        gib = r.get("peak_gib", r.get("peak_rss_gib", ""))
        lines.append(
            f"| {r['config']} | {r['status']} | {r.get('precision', '')} | {r.get('batch', '')} | "
            f"{'yes' if r.get('grad_checkpointing') else 'no'} | {r.get('trainable_m', '')} | "
            f"{r.get('steps', '')} | {r.get('samples_per_s', '')} | {gib} | {_fits(r)} |"
        )
    e, q = result["encode"], result["rerank"]
    lines += [
        "",
        "## Index encoding (build_index, strategy B's model)",
        "",
        f"| status | images | batch | workers | images/s | without fingerprint | {mem} | fits |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        f"| {e['status']} | {e.get('images', '')} | {e.get('batch', '')} | {e.get('workers', '')} | "
        f"{e.get('images_per_s', '')} | {e.get('images_per_s_without_fingerprint', '')} | "
        f"{e.get('peak_gib', e.get('peak_rss_gib', ''))} | {_fits(e)} |",
        "",
        "## ITM re-ranking (ItmRerankStage, BLIP model, cold token cache)",
        "",
        f"| status | queries | k | distinct images | pairs/s | queries/s | {mem} | fits |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        f"| {q['status']} | {q.get('queries', '')} | {q.get('k', '')} | {q.get('distinct_images', '')} | "
        f"{q.get('pairs_per_s', '')} | {q.get('queries_per_s', '')} | "
        f"{q.get('peak_gib', q.get('peak_rss_gib', ''))} | {_fits(q)} |",
    ]
    notes = [r for r in result["train"] if r.get("note") or r.get("tokenizer") or r.get("error")]
    for r in notes:
        parts = [r.get("note"), r.get("tokenizer") and f"tokenizer: {r['tokenizer']}", r.get("error")]
        lines.append(f"- {r['config']}: " + "; ".join(p for p in parts if p))
    return "\n".join(lines) + "\n"


def _fits(row: dict[str, Any]) -> str:
    if row.get("fits") is None:
        return "n/a"
    return "yes" if row["fits"] else "no"


def write_results(result: dict[str, Any], out_dir: Path, name: str) -> None:
    from trafficsearch.ioutil import atomic_write_json, atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / f"{name}.json", result)
    atomic_write_text(out_dir / f"{name}.md", markdown(result))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from trafficsearch.benchmarking import machine_info

    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the seed's fp32 (BLIP) is plain fp32
    clock = Clock(args.budget_s)
    name = args.name or ("gpu_rehearsal_tiny" if args.tiny else "gpu_rehearsal")
    pending = {"status": "pending"}
    result: dict[str, Any] = {
        "tiny": args.tiny,
        "device": device_info(device),
        "machine": machine_info(),
        "command": "python benchmarks/gpu_rehearsal.py " + " ".join(sys.argv[1:]),
        "budget_s": args.budget_s,
        "total_s": 0.0,
        "train": [{"config": c, **pending} for c in TRAIN_CONFIGS],
        "encode": dict(pending),
        "rerank": dict(pending),
    }
    write_results(result, args.out_dir, name)
    keep: dict[str, Any] = {}
    budget = {p: (PART_BUDGET[p] if not args.tiny else args.budget_s) for p in ORDER}
    runners: dict[str, Callable[[float], dict]] = {
        "encode": lambda d: encode_part(args, device, d, keep),
        "rerank": lambda d: rerank_part(args, device, d, keep),
    }
    for part in ORDER:
        if clock.left() <= 0:
            row = {"status": "skipped (run budget spent)"}
        else:
            deadline = clock.box(budget[part])
            try:
                if part in TRAIN_CONFIGS:
                    row = train_part(part, args, device, deadline, keep)
                else:
                    row = runners[part](deadline)
            except Exception as exc:  # noqa: BLE001 - one part's failure must not lose the others
                traceback.print_exc()
                row = {"status": "error", "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        if part in TRAIN_CONFIGS:
            row = {"config": part, **{k: v for k, v in row.items() if k != "config"}}
            result["train"][TRAIN_CONFIGS.index(part)] = row
        else:
            result[part] = row
            if part == "encode":
                keep.pop("clip", None)
        result["total_s"] = round(time.perf_counter() - clock.start, 1)
        write_results(result, args.out_dir, name)
        print(f"{part}: {json.dumps(row)}", flush=True)
    keep.clear()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cuda | cpu | auto")
    parser.add_argument("--tiny", action="store_true", help="tiny configs, a couple of steps (CPU test)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per config (5; tiny 2)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="the whole run's time budget")
    parser.add_argument("--encode-images", type=int, default=None, help="2000 (tiny: 24)")
    parser.add_argument("--rerank-queries", type=int, default=None, help="500 (tiny: 4)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (8; tiny 0)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--name", default=None, help="results file stem")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.tiny else 5)
    args.encode_images = args.encode_images or (24 if args.tiny else 2000)
    args.rerank_queries = args.rerank_queries or (4 if args.tiny else 500)
    args.workers = args.workers if args.workers is not None else (0 if args.tiny else 8)
    if not args.tiny and pick_device(args.device).type != "cuda":
        print("gpu_rehearsal: no CUDA device; use --tiny for the CPU run of the tiny configs")
        return 2
    with tempfile.TemporaryDirectory(prefix="ts-gpu-rehearsal-") as tmp:
        args.work = args.work or Path(tmp)
        args.work.mkdir(parents=True, exist_ok=True)
        result = run(args)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
