"""Competition-scale rehearsal on a CPU machine: the seed's data pipeline and the whole inference path at
the real sizes, with wall time and peak RSS per stage.

    python benchmarks/real_scale.py [--scale 1.0] [--work /tmp/ts-real-scale] [--loader-images 2000]

Synthetic data at the competition's sizes (136,117 train+val labels; 17,611 test images, 7,611 vehicles
wide and 10,000 pedestrians tall, and 17,611 test queries from the synthetic grammar; `--scale 0.1` for a
quick run). Cheap images (noise + a solid body at the renderer's size ranges) are written once as JPEG
and kept under --work, so a second run starts at the stages.

Stages, each in its own process (wall time, and peak RSS = ru_maxrss of that process from wait4; DataLoader
workers are separate processes and not counted):
- labels: read the 136k-line label file, expand prompts into pairs, draw an epoch's batch order;
- loader: images/s one DataLoader worker feeds with each seed config's 224 px augmentation (pad to
  square, RandomResizedCrop, RandAugment, as configs/seed/ set them), over a subset, with 1 and 2 workers:
  so how many CPU cores one GPU needs at a given step rate;
- index:<member>: `build_index` of the test gallery for each of 4 tiny members (2 tiny CLIPs, the
  attribute baseline, tiny BLIP), then the ensemble file (reusing the member indexes);
- fusion: `trafficsearch submit --no-rerank` (exact l2 fusion of every query over the whole gallery) at
  all queries and at a quarter of them: equal peak RSS means nothing grows with queries x gallery;
- rerank: `trafficsearch submit --rerank` (fusion + BLIP ITM of each query's top 10 + the JSON), checked
  with eval.submission.read_submission against the query file.
Writes benchmarks/results/real_scale.{json,md} (or --name) with the machine named.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
N_TRAIN_LABELS = 136_117  # 126,117 train + 10,000 val lines (docs/competition.md)
N_TEST = 17_611  # test images and test query lines
N_TEST_VEHICLES = 7_611
SEED_CONFIGS = ("vit-h-14-a", "vit-h-14-b", "xlm-roberta-large-vit-h-14", "blip-large")
# strategy B reads its data exactly as A (same pad, crop and interpolation): measured once, as A
LOADER_CONFIGS = ("vit-h-14-a", "xlm-roberta-large-vit-h-14", "blip-large")
MEMBERS = ("clip1", "clip2", "attrs", "blip")
# One-GPU training rates (images/s) used to turn loader rates into cores per GPU until the GPU rehearsal
# has measured them. ESTIMATES: FLOPs per sample (ViT-H-14 image 335 GFLOP + text 47 GFLOP forward at
# 224 px / 77 tokens; BLIP-large ViT-L/16 120 GFLOP + ~15 GFLOP text passes), x3 for a full backward, only
# the unlocked blocks' backward for B / XLM-R, +1 forward for checkpointing, at 35% of an H200's dense peak
# (989 TFLOPS bf16/fp16, 67 TFLOPS plain fp32 for BLIP's fp32 recipe).
ESTIMATED_GPU_RATE = {
    "vit-h-14-a": 300.0,
    "vit-h-14-b": 620.0,
    "xlm-roberta-large-vit-h-14": 620.0,
    "blip-large": 45.0,
}


# -- machine -------------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    from trafficsearch.benchmarking import machine_info

    info = machine_info()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


# -- synthetic data (written once under --work) --------------------------------------------------------------
def sizes(rng: np.random.Generator, kind: str) -> tuple[int, int]:
    """(w, h) of a crop, the ranges data/synth/render.py draws (tall pedestrians, wide vehicles)."""
    if kind == "pedestrian":
        h = int(rng.integers(100, 221))
        return int(np.clip(h / rng.uniform(2.0, 3.1), 40, 90)), h
    w = int(rng.integers(100, 241))
    aspect = rng.uniform(1.7, 2.4) if rng.random() < 0.45 else rng.uniform(1.15, 1.6)
    h = int(np.clip(w / aspect, 70, 150))
    return max(w, int(h * 1.1)), h


def cheap_image(rng: np.random.Generator, w: int, h: int):  # noqa: ANN201 - a PIL image
    """A smooth noise background with a solid body: JPEG-compressible like a crop, ~1 ms to make."""
    from PIL import Image, ImageDraw

    base = rng.integers(0, 255, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    colour = tuple(int(c) for c in rng.integers(0, 255, 3))
    draw.ellipse((w // 6, h // 8, 5 * w // 6, 7 * h // 8), fill=colour)
    return image


def write_images(records: list, folder: Path, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for r in records:
        w, h = sizes(rng, r.kind)
        cheap_image(rng, w, h).save(folder / r.image, quality=90)


def make_data(work: Path, scale: float, loader_images: int) -> dict[str, Any]:
    """Competition-layout data under work/data (cached by its parameters)."""
    from trafficsearch.data.labels import write_labels, write_queries
    from trafficsearch.data.layout import split
    from trafficsearch.data.synth.grammar import sample_records
    from trafficsearch.ioutil import atomic_write_json

    params = {"version": 1, "scale": scale, "loader_images": loader_images}
    root = work / "data"
    done = root / "params.json"
    if done.is_file() and json.loads(done.read_text()) == params:
        return {"cached": True}
    n_train, n_test = round(N_TRAIN_LABELS * scale), round(N_TEST * scale)
    rng = np.random.default_rng(0)
    used: set[str] = set()
    train = sample_records(n_train, rng, used=used)
    test = sample_records(
        n_test,
        rng,
        vehicle_fraction=N_TEST_VEHICLES / N_TEST,
        test_style=True,
        used=used,
        vehicle_prefix="vehicle",
    )
    tr, te = split(root, "train"), split(root, "test")
    tr.dir.mkdir(parents=True, exist_ok=True)
    te.dir.mkdir(parents=True, exist_ok=True)
    write_labels(train, tr.labels)
    write_labels(test, te.labels)
    write_queries([r.text for r in test], te.queries)
    quarter = [r.text for r in test[::4]]
    write_queries(quarter, te.dir / "test_text_quarter.txt")
    # the loader subset: evenly spread over the file (vehicles come first), same sizes as the test crops
    pick = np.linspace(0, len(train) - 1, min(loader_images, len(train))).round().astype(int)
    subset = [train[i] for i in dict.fromkeys(pick.tolist())]
    write_labels(subset, tr.dir / "loader_label.txt")
    write_images(subset, tr.images, seed=1)
    write_images(test, te.images, seed=2)
    atomic_write_json(done, params)
    return {"cached": False}


# -- stages (each runs in a child process: `real_scale.py --stage NAME`) -------------------------------------
def stage_labels(work: Path, _: argparse.Namespace) -> dict[str, Any]:
    from trafficsearch.data.dataset import EpochBatches, make_pairs
    from trafficsearch.data.labels import read_labels

    records = read_labels(work / "data/train/train_label.txt").records
    pairs = make_pairs(records, vehicles=True, pedestrians=True)
    batches = EpochBatches(len(pairs), 128, seed=0)
    batches.order(0)
    return {"labels": len(records), "pairs": len(pairs), "steps_per_epoch_b128": len(batches)}


class AugmentedImages:
    """Decode + pad geometry + the config's crop and RandAugment, all in the worker (per sample)."""

    def __init__(self, records: list, images: Path, cfg: Any) -> None:
        from trafficsearch.data.dataset import ImageDataset
        from trafficsearch.data.transforms import Preprocess, TrainAugment

        d = cfg.data
        pre = Preprocess(kind=d.transform, image_size=224)
        self.images = ImageDataset(records, images, pre)
        randaugment = None
        if d.randaugment:
            import dataclasses

            randaugment = dataclasses.asdict(d.randaugment)
        self.augment = TrainAugment(
            224,
            0,
            tuple(d.crop_scale) if d.crop_scale else None,
            tuple(d.crop_ratio),
            d.crop_interpolation,
            randaugment,
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):  # noqa: ANN204 - (uint8 [3,224,224], index)
        pixels, i = self.images[index]
        return self.augment.one(pixels, 0, i), i


def stage_loader(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from trafficsearch.data.labels import read_labels
    from trafficsearch.train.config import load_config

    torch.set_num_threads(1)
    config, workers = args.stage_arg.rsplit(":", 1)
    cfg = load_config(REPO / "configs/seed" / f"{config}.yaml")
    records = read_labels(work / "data/train/loader_label.txt").records
    dataset = AugmentedImages(records, work / "data/train/train_images", cfg)
    batch = 32
    loader = DataLoader(dataset, batch_size=batch, num_workers=int(workers), shuffle=False)
    self_cpu = cpu_seconds(resource.RUSAGE_SELF)
    it = iter(loader)
    n_all = len(next(it)[0])  # worker start-up and the first batch are not wall-clock throughput
    start, n = time.perf_counter(), 0
    for pixels, _ in it:
        n += len(pixels)
    seconds = time.perf_counter() - start
    del it  # joins the workers: their CPU time is now in RUSAGE_CHILDREN
    cpu = cpu_seconds(resource.RUSAGE_SELF) - self_cpu + cpu_seconds(resource.RUSAGE_CHILDREN)
    return {
        "config": config,
        "workers": int(workers),
        "images": n,
        "images_per_s": round(n / seconds, 1),
        # what one core does, whatever else runs on the machine: images over the CPU seconds spent on
        # them by the workers (decode, pad, crop, RandAugment) and the main process (collation)
        "images_per_cpu_s": round((n_all + n) / cpu, 1),
        "augment": {
            "transform": cfg.data.transform,
            "crop_scale": cfg.data.crop_scale,
            "crop_interpolation": cfg.data.crop_interpolation,
            "randaugment": bool(cfg.data.randaugment),
        },
    }


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def member_specs(work: Path) -> dict[str, str]:
    models = work / "models"
    return {
        "clip1": str(models / "clip1"),
        "clip2": str(models / "clip2"),
        "attrs": str(models / "attrs"),
        "blip": "blip:blip-tiny",
    }


def stage_models(work: Path, _: argparse.Namespace) -> dict[str, Any]:
    """Tiny checkpoints as the tests build them (random init, fixed seeds), so every load is the same."""
    import torch

    from trafficsearch.models.attributes import create_attribute_model
    from trafficsearch.models.clip import create_clip, save_checkpoint

    out = work / "models"
    for name, seed in (("clip1", 1), ("clip2", 2)):
        if not (out / name / "model.json").is_file():
            torch.manual_seed(seed)
            save_checkpoint(out / name, create_clip("ts-tiny-test"))
    if not (out / "attrs" / "model.json").is_file():
        create_attribute_model(image_size=32, width=16, depth=2, seed=3).save(out / "attrs")
    return {"members": list(MEMBERS)}


def stage_index(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import shutil

    import torch

    from trafficsearch.index.build import build_index
    from trafficsearch.models.factory import load_model

    torch.set_num_threads(1)
    name = args.stage_arg
    spec = member_specs(work)[name]
    out = work / "index" / "members" / name
    shutil.rmtree(out, ignore_errors=True)
    model = load_model(spec)
    result = build_index(
        work / "data/test/test_images",
        out,
        model,
        model_spec=spec,
        labels=work / "data/test/test_label.txt",
        workers=args.workers,
        batch_size=64,
        progress=False,
    )
    return {"member": name, "spec": spec, "images": int(result.manifest["count"])}


def stage_ensemble(work: Path, _: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from trafficsearch.search.ensemble import build_ensemble_index

    specs = member_specs(work)
    config = {
        "name": "real-scale-tiny",
        "normalization": "l2",
        "candidates": None,
        "route": "off",
        "members": [{"name": m, "model": specs[m], "weight": 1.0, "index": f"members/{m}"} for m in MEMBERS],
        "rerank": {"model": specs["blip"], "k": 10, "form": "seed", "merge": "block"},
    }
    path = work / "index" / "source.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    build_ensemble_index(path, work / "data/test/test_images", work / "index", progress=False)
    return {"members": len(MEMBERS)}


STAGES = {
    "labels": stage_labels,
    "loader": stage_loader,
    "models": stage_models,
    "index": stage_index,
    "ensemble": stage_ensemble,
}


# -- the parent: runs the stages as children, measures them --------------------------------------------------
def run_child(argv: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run argv; wall seconds and the child's peak RSS (GiB) from wait4's rusage."""
    start = time.perf_counter()
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{tail}")
    return {"wall_s": round(wall, 2), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3)}


def run_stage(name: str, arg: str, args: argparse.Namespace, env: dict[str, str], log: Path) -> dict:
    out = args.work / "stage.json"
    argv = [
        sys.executable,
        __file__,
        "--stage",
        name,
        "--stage-arg",
        arg,
        "--work",
        str(args.work),
        "--workers",
        str(args.workers),
    ]
    row = run_child(argv, env, log)
    row.update(json.loads(out.read_text()))
    return row


def run_submit(index: Path, queries: Path, out: Path, rerank: bool, env: dict, log: Path) -> dict:
    argv = [sys.executable, "-m", "trafficsearch.cli", "submit", str(index), "--queries", str(queries)]
    argv += ["--out", str(out), "--rerank" if rerank else "--no-rerank"]
    return run_child(argv, env, log)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="share of the competition's sizes")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ts-real-scale"))
    parser.add_argument("--loader-images", type=int, default=None, help="default 2000 x min(1, 10 x scale)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for index builds")
    parser.add_argument("--name", default=None, help="results file stem (default real_scale[_scale])")
    parser.add_argument(
        "--only-loader", action="store_true", help="re-measure the loader rows of an existing results file"
    )
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stage-arg", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.work = args.work.resolve()
    if args.stage:
        from trafficsearch.ioutil import atomic_write_json

        atomic_write_json(args.work / "stage.json", STAGES[args.stage](args.work, args))
        return 0
    return rehearse(args)


def rehearse(args: argparse.Namespace) -> int:
    from rich.console import Console

    from trafficsearch.data.labels import read_queries
    from trafficsearch.eval.submission import read_submission
    from trafficsearch.ioutil import atomic_write_json, atomic_write_text

    console = Console()
    scale = args.scale
    loader_images = args.loader_images or round(2000 * min(1.0, 10 * scale))
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = work / "stages.log"
    log.write_text("")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    info = machine()
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def record(stage: str, row: dict[str, Any]) -> dict[str, Any]:
        row = {"stage": stage, **row}
        rows.append(row)
        console.print(f"[bold]{stage}[/]: {row['wall_s']:.1f} s, peak RSS {row['peak_rss_gib']:.2f} GiB")
        return row

    with console.status("synthetic data (once per --work) ..."):
        start = time.perf_counter()
        cached = make_data(work, scale, loader_images)["cached"]
    data_s = round(time.perf_counter() - start, 1)
    console.print(f"data: {'cached' if cached else f'written in {data_s} s'} under {work / 'data'}")
    name = args.name or ("real_scale" if scale == 1.0 else f"real_scale_{scale:g}")
    if args.only_loader:
        return refresh_loader(RESULTS / f"{name}.json", args, env, log, record)
    record("labels", run_stage("labels", "", args, env, log))
    loader = [record(*r) for r in loader_rows(args, env, log)]
    record("models (tiny checkpoints)", run_stage("models", "", args, env, log))
    for member in MEMBERS:
        record(f"index:{member}", run_stage("index", member, args, env, log))
    record("ensemble file", run_stage("ensemble", "", args, env, log))
    test = work / "data/test"
    n_queries = len(read_queries(test / "test_text.txt"))
    quarter = record(
        "fusion Q/4 (submit --no-rerank)",
        run_submit(work / "index", test / "test_text_quarter.txt", work / "sub_q4.json", False, env, log),
    )
    fusion = record(
        "fusion (submit --no-rerank)",
        run_submit(work / "index", test / "test_text.txt", work / "sub_fusion.json", False, env, log),
    )
    rerank = record(
        "fusion + ITM top 10 (submit --rerank)",
        run_submit(work / "index", test / "test_text.txt", work / "submission.json", True, env, log),
    )
    texts = read_queries(test / "test_text.txt")
    sub = read_submission(work / "submission.json", texts)  # raises unless every line matches
    assert all(len(names) == 10 for names in sub.ranked_names)
    total_s = round(time.perf_counter() - t0, 1)

    n_images = round(N_TEST * scale)
    distinct = len(set(texts))
    full_matrix_gib = distinct * n_images * 4 / 2**30
    summary = {
        "scale": scale,
        "train_labels": round(N_TRAIN_LABELS * scale),
        "test_images": n_images,
        "queries": n_queries,
        "distinct_queries": distinct,
        "loader_images": loader_images,
        "data_written_s": None if cached else data_s,
        "total_s": total_s,
        "rerank_only_s": round(rerank["wall_s"] - fusion["wall_s"], 1),
        "fusion_rss_full_minus_quarter_gib": round(fusion["peak_rss_gib"] - quarter["peak_rss_gib"], 3),
        "one_full_qxg_float32_matrix_gib": round(full_matrix_gib, 2),
        "submission_ok": True,
    }
    cores = cores_per_gpu(loader)
    result = {"machine": info, "summary": summary, "stages": rows, "cores_per_gpu": cores}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / f"{name}.json", result)
    md = markdown(result, args)
    atomic_write_text(RESULTS / f"{name}.md", md)
    console.print(md)
    return 0


def loader_rows(args: argparse.Namespace, env: dict, log: Path) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for config in LOADER_CONFIGS:
        for workers in (1, 2):
            row = run_stage("loader", f"{config}:{workers}", args, env, log)
            rows.append((f"loader {config} w{workers}", row))
    return rows


def refresh_loader(path: Path, args: argparse.Namespace, env: dict, log: Path, record: Any) -> int:
    """--only-loader: re-measure the loader rows of an existing results file (the rest is kept)."""
    from trafficsearch.ioutil import atomic_write_json, atomic_write_text

    result = json.loads(path.read_text())
    fresh = {stage: record(stage, row) for stage, row in loader_rows(args, env, log)}
    result["stages"] = [fresh.get(r["stage"], r) for r in result["stages"]]
    result["cores_per_gpu"] = cores_per_gpu(list(fresh.values()))
    result["loader_rerun"] = {
        "command": f"python benchmarks/real_scale.py --scale {args.scale:g} --work {args.work} --only-loader",
        "load_avg_1m": os.getloadavg()[0],
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    atomic_write_json(path, result)
    atomic_write_text(path.with_suffix(".md"), markdown(result, args))
    return 0


def gpu_rates() -> tuple[dict[str, float], str]:
    """Measured one-GPU training rates from benchmarks/results/gpu_rehearsal.json when it ran on a GPU."""
    path = RESULTS / "gpu_rehearsal.json"
    if path.is_file():
        data = json.loads(path.read_text())
        if data.get("device", {}).get("cuda") and not data.get("tiny"):
            rates = {
                r["config"]: float(r["samples_per_s"])
                for r in data.get("train", [])
                if isinstance(r.get("samples_per_s"), (int, float))
            }
            if rates:
                return {**ESTIMATED_GPU_RATE, **rates}, f"measured ({data['device'].get('name')})"
    return dict(ESTIMATED_GPU_RATE), "ESTIMATE (FLOPs at 35% of an H200's peak; no GPU run yet)"


def cores_per_gpu(loader: list[dict[str, Any]]) -> dict[str, Any]:
    rates, source = gpu_rates()
    per_core: dict[str, float] = {}
    for config in LOADER_CONFIGS:
        measured = [r["images_per_cpu_s"] for r in loader if r["config"] == config]
        per_core[config] = round(sum(measured) / len(measured), 1)
    rows = []
    for config in SEED_CONFIGS:
        data_as = "vit-h-14-a" if config == "vit-h-14-b" else config
        core = per_core[data_as]
        rows.append(
            {
                "config": config,
                "loader_images_per_s_per_core": core,
                "gpu_images_per_s": rates[config],
                "cores_needed": round(rates[config] / core, 1),
            }
        )
    return {"gpu_rate_source": source, "rows": rows}


def markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    m, s = result["machine"], result["summary"]
    cmd = f"python benchmarks/real_scale.py --scale {s['scale']:g} --work {args.work}"
    lines = [
        f"# Competition-scale rehearsal (scale {s['scale']:g}), CPU",
        "",
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('ram_gib')} GiB RAM, {m.get('platform')};",
        f"torch {m.get('torch')}, faiss {m.get('faiss')}; load average {m.get('load_avg_1m'):.1f} at the "
        "start",
        "(the machine is shared with other jobs). Command: `" + cmd + "`.",
        "",
        f"Data: {s['train_labels']:,} train labels, {s['test_images']:,} test images (vehicles wide, "
        f"pedestrians tall), {s['queries']:,} queries ({s['distinct_queries']:,} distinct); loader on "
        f"{s['loader_images']:,} images. Total {s['total_s'] / 60:.1f} min"
        + (
            f" (+{s['data_written_s']:.0f} s writing the data)." if s["data_written_s"] else " (data cached)."
        ),
        "",
        "| stage | wall s | peak RSS GiB | notes |",
        "|---|---:|---:|---|",
    ]
    for r in result["stages"]:
        note = ""
        if "images_per_s" in r:
            note = f"{r['images_per_s']} img/s wall, {r.get('images_per_cpu_s', '?')} img/CPU-s"
        elif "pairs" in r:
            note = f"{r['labels']:,} labels -> {r['pairs']:,} pairs"
        elif "member" in r:
            note = f"{r['images']:,} images, `{Path(r['spec']).name}`"
        lines.append(f"| {r['stage']} | {r['wall_s']:.1f} | {r['peak_rss_gib']:.2f} | {note} |")
    lines += [
        "",
        f"ITM re-ranking alone (rerank - fusion): {s['rerank_only_s']:.1f} s. Fusion peak RSS at all "
        f"queries minus at a quarter: {s['fusion_rss_full_minus_quarter_gib']:+.3f} GiB; one full "
        f"distinct-queries x gallery float32 matrix would be {s['one_full_qxg_float32_matrix_gib']:.2f} GiB "
        "per member. The submission was read back with eval.submission.read_submission (10 names per line).",
        "",
        "Cores one GPU needs for the seed's augmentation at 224 px: loader images per CPU-second (decode, "
        "pad, crop/RandAugment in the workers + collation; mean of the 1- and 2-worker runs, so other jobs "
        f"on the machine do not count), GPU rate: {result['cores_per_gpu']['gpu_rate_source']}.",
        "",
        "| seed config | loader img per CPU-s | GPU img/s | cores per GPU |",
        "|---|---:|---:|---:|",
    ]
    for r in result["cores_per_gpu"]["rows"]:
        lines.append(
            f"| {r['config']} | {r['loader_images_per_s_per_core']} | {r['gpu_images_per_s']:g} | "
            f"{r['cores_needed']} |"
        )
    rerun = result.get("loader_rerun")
    if rerun:
        lines += [
            "",
            f"The loader rows were re-measured on {rerun['when']} (load average {rerun['load_avg_1m']:.1f}): "
            f"`{rerun['command']}`.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
