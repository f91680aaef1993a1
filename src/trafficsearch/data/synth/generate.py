"""Render label lines to images and write a whole synthetic data set in the competition layout.

Rendering is resumable: images are written atomically, so a file that exists is complete and is
skipped on the next run. Labels are a pure function of the seed and counts, and `synth.json` records
them, so a second run with the same arguments continues the first instead of mixing two data sets.
"""

from __future__ import annotations

import io
import multiprocessing as mp
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from trafficsearch.data.labels import read_labels, write_labels, write_queries
from trafficsearch.data.layout import split
from trafficsearch.data.records import Record
from trafficsearch.data.synth.grammar import apply_label_noise, sample_records
from trafficsearch.data.synth.render import DOMAINS, Domain, render_record
from trafficsearch.data.synth.web import sample_web_records
from trafficsearch.errors import ConfigError
from trafficsearch.ioutil import atomic_write_bytes, atomic_write_json

MANIFEST = "synth.json"
GENERATOR_VERSION = 2  # 2: brands drawn as vehicle design (data/synth/brand_design.py)
JPEG_QUALITY = 95


def is_complete_jpeg(path: Path) -> bool:
    """A JPEG that ends with its end-of-image marker (atomic writes make this the normal case)."""
    try:
        with open(path, "rb") as handle:
            if handle.read(2) != b"\xff\xd8":
                return False
            handle.seek(-2, 2)
            return handle.read(2) == b"\xff\xd9"
    except OSError:
        return False


def _render_one(job: tuple[Record, str, int, str]) -> str:
    record, images_dir, seed, domain = job
    buf = io.BytesIO()
    render_record(record, seed, domain).save(buf, "JPEG", quality=JPEG_QUALITY)  # type: ignore[arg-type]
    atomic_write_bytes(Path(images_dir) / record.image, buf.getvalue())
    return record.image


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
    )


def render_labels(
    labels_path_or_records: str | Path | Sequence[Record],
    images_dir: str | Path,
    seed: int = 0,
    domain: Domain = "web",
    workers: int = 2,
    progress: bool = True,
    description: str = "rendering",
) -> int:
    """Render one image per label line into `images_dir`; returns how many were rendered (not skipped)."""
    if domain not in DOMAINS:
        raise ConfigError(f"unknown domain {domain!r}: expected one of {', '.join(DOMAINS)}", field="domain")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}", field="workers")
    if isinstance(labels_path_or_records, (str, Path)):
        records: Sequence[Record] = read_labels(labels_path_or_records).records
    else:
        records = labels_path_or_records
    images = Path(images_dir)
    images.mkdir(parents=True, exist_ok=True)
    todo = [r for r in records if not is_complete_jpeg(images / r.image)]
    jobs = [(r, str(images), seed, domain) for r in todo]
    with _progress() as bar:
        task = bar.add_task(
            description, total=len(records), completed=len(records) - len(todo), visible=progress
        )
        for _ in _run(jobs, workers):
            bar.advance(task)
    return len(todo)


def _run(jobs: list[tuple[Record, str, int, str]], workers: int) -> Iterator[str]:
    if workers == 1 or len(jobs) < 64:
        yield from map(_render_one, jobs)
        return
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(workers) as pool:
        yield from pool.imap_unordered(_render_one, jobs, chunksize=32)


def _discard_images(root: Path) -> None:
    """Delete the rendered JPEGs of every split (labels are a pure function of the arguments: kept)."""
    for name in ("train", "val", "test"):
        folder = split(root, name).images
        if folder.is_dir():
            for image in folder.glob("*.jpg"):
                image.unlink()


def _check_manifest(root: Path, params: dict) -> None:
    path = root / MANIFEST
    if not path.is_file():
        return
    import json

    old = json.loads(path.read_text(encoding="utf-8"))
    before = dict(old.get("params") or {})
    if before.get("version") != params["version"] and {**before, "version": params["version"]} == params:
        _discard_images(root)  # same arguments, older renderer: render again rather than mix two renderers
        return
    if before != params:
        raise ConfigError(
            f"folder already holds a synthetic data set made with {old.get('params')}; "
            "use the same arguments to resume, or a new --out folder",
            path=path,
        )


def generate_dataset(
    out_root: str | Path,
    n_train: int,
    n_val: int,
    seed: int = 0,
    noise_rate: float = 0.0,
    n_test: int = 0,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, int]:
    """Write train/val (web-domain vehicles) and optionally test (camera domain, colour+brand+type queries).

    With noise_rate > 0 a share of train lines carry another record's label (images stay true);
    `train/train_label_clean.txt` keeps the true labels so the noise can be measured.
    Returns the number of records per split.
    """
    if min(n_train, n_val, n_test) < 0:
        raise ConfigError("split sizes must be zero or more")
    if not 0.0 <= noise_rate < 1.0:
        raise ConfigError(f"noise rate must be in [0, 1), got {noise_rate}", field="noise")
    root = Path(out_root)
    params = {
        "version": GENERATOR_VERSION,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "seed": seed,
        "noise_rate": noise_rate,
    }
    _check_manifest(root, params)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / MANIFEST, {"params": params, "generator": "trafficsearch.data.synth"})

    rng = np.random.default_rng(seed)
    used: set[str] = set()
    train = sample_records(n_train, rng, used=used)
    val = sample_records(n_val, rng, used=used)
    test = sample_records(n_test, rng, used=used, test_style=True, vehicle_prefix="vehicle")
    noisy = apply_label_noise(train, noise_rate, rng)
    counts: dict[str, int] = {}
    for name, true_records, labels, domain, render_seed in (
        ("train", train, noisy, "web", seed),
        ("val", val, val, "web", seed + 1),
        ("test", test, test, "camera", seed + 2),
    ):
        counts[name] = len(true_records)
        if not true_records:
            continue
        s = split(root, name)
        write_labels(labels, s.labels)
        if name == "train" and noise_rate > 0:
            write_labels(true_records, s.dir / "train_label_clean.txt")
        if name == "test":
            write_queries(_queries(test), s.queries)
        render_labels(
            true_records,
            s.images,
            seed=render_seed,
            domain=domain,
            workers=workers,  # type: ignore[arg-type]
            progress=progress,
            description=f"{name:5s}",
        )
    return counts


CORPORA = ("competition", "web")


def generate_web_corpus(
    out_root: str | Path,
    n_train: int,
    n_val: int,
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, int]:
    """Write the "web" pre-training corpus (data/synth/web.py) as ROOT/train and ROOT/val, web domain.

    Same layout, manifest check and resume as `generate_dataset`; a different grammar, so the corpus can
    be pre-trained on with the one `trafficsearch train` path and never repeats a competition caption form.
    """
    if min(n_train, n_val) < 0:
        raise ConfigError("split sizes must be zero or more")
    root = Path(out_root)
    params = {"version": GENERATOR_VERSION, "corpus": "web", "n_train": n_train, "n_val": n_val, "seed": seed}
    _check_manifest(root, params)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / MANIFEST, {"params": params, "generator": "trafficsearch.data.synth.web"})
    rng = np.random.default_rng(seed)
    train = sample_web_records(n_train, rng)
    val = sample_web_records(n_val, rng, start=n_train)
    counts: dict[str, int] = {}
    for name, records, render_seed in (("train", train, seed), ("val", val, seed + 1)):
        counts[name] = len(records)
        if not records:
            continue
        s = split(root, name)
        write_labels(records, s.labels)
        render_labels(
            records, s.images, seed=render_seed, domain="web", workers=workers, progress=progress,
            description=f"web {name:5s}",
        )  # fmt: skip
    return counts


def _queries(records: Iterable[Record]) -> list[str]:
    """Test queries: one per test record, vehicles first (as in test_text.txt); texts repeat naturally."""
    return [r.text for r in records]
