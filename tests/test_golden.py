"""Golden outputs: tiny seeded models' embeddings and scores, fusion rows and search rankings, compared with
files stored under tests/golden/ so that a refactor that changes any number fails here.

Regenerate (only when a change of numbers is intended, and say why in the commit):
    python -m pytest tests/test_golden.py --regen-golden
Every case runs single-threaded in fp32 on the CPU from fixed seeds and fixed inputs (two runs give the same
bytes); the tolerances only absorb BLAS differences between machines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw

GOLDEN = Path(__file__).parent / "golden"
RTOL, ATOL = 1e-4, 1e-5
TEXTS = [
    "This is a white Audi.",
    "A red BMW.",
    "A pedestrian who is male is aged 60 or older.",
    "This is a blue Ford truck.",
]
BOXES = [((220, 30, 30), (128, 128, 128)), ((30, 60, 220), (200, 200, 200)),
         ((30, 180, 60), (40, 40, 40)), ((240, 240, 240), (90, 60, 30))]  # fmt: skip


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """One thread and deterministic kernels while a case computes (both restored afterwards)."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det)
        torch.set_num_threads(threads)


def _images() -> list[Image.Image]:
    """Four fixed crops of different sizes and aspect ratios (the transforms pad/resize them)."""
    out = []
    for i, (fg, bg) in enumerate(BOXES):
        w, h = 24 + 9 * i, 40 - 5 * i
        img = Image.new("RGB", (w, h), bg)
        ImageDraw.Draw(img).rectangle([w // 5, h // 4, w - w // 5, h - h // 4], fill=fg)
        out.append(img)
    return out


def _pixels(model: object) -> torch.Tensor:
    transform = model.image_transform()  # type: ignore[attr-defined]
    return torch.stack([transform(img) for img in _images()])


def _tiny_clip() -> object:
    from trafficsearch.models.clip import create_clip

    torch.manual_seed(0)
    return create_clip("ts-tiny-test", None)


def case_clip() -> dict[str, np.ndarray]:
    """The project's registered open_clip config ts-tiny-test, seeded random init: both towers."""
    model = _tiny_clip()
    pixels = _pixels(model)
    with torch.no_grad():
        img = model.encode_images(pixels).numpy()  # type: ignore[attr-defined]
        txt = model.encode_texts(TEXTS).numpy()  # type: ignore[attr-defined]
    return {"pixels_sum": pixels.sum(dim=(1, 2, 3)).numpy(), "image": img, "text": txt, "scores": txt @ img.T}


def case_blip() -> dict[str, np.ndarray]:
    """blip-tiny (seed 0): ITC image/text embeddings and the ITM logits and probabilities of all pairs."""
    from trafficsearch.models.blip import create_blip

    model = create_blip("blip-tiny", seed=0).eval()
    pixels = _pixels(model)
    n = len(TEXTS)
    pair_texts = [t for t in TEXTS for _ in range(n)]
    pair_pixels = pixels.repeat(n, 1, 1, 1)
    with torch.no_grad():
        img = model.encode_images(pixels).numpy()
        txt = model.encode_texts(TEXTS).numpy()
        itm = model.itm_scores(pair_texts, pair_pixels).numpy().reshape(n, n)
        prob = model.itm_scores(pair_texts, pair_pixels, probabilities=True).numpy().reshape(n, n)
    return {"image": img, "text": txt, "itc": txt @ img.T, "itm": itm, "itm_prob": prob}


def case_attributes() -> dict[str, np.ndarray]:
    """The attribute baseline (seed 0): image log-probability vectors and parsed query vectors."""
    from trafficsearch.models.attributes import create_attribute_model

    model = create_attribute_model(seed=0)
    img = model.encode_images(_pixels(model)).numpy()
    txt = model.encode_texts(TEXTS).numpy()
    return {"image": img, "text": txt, "scores": txt @ img.T}


def case_fusion() -> dict[str, np.ndarray]:
    """Each normalisation over fixed rows (with ties and a constant row), and a weighted fuse of two."""
    from trafficsearch.search import fusion

    rng = np.random.default_rng(7)
    a = rng.normal(size=(3, 9)).astype(np.float32)
    a[1, 2] = a[1, 5]  # a tie: the stable rank order matters for rrf
    a[2] = 0.25  # a constant row: the epsilon guards matter
    b = rng.uniform(-1, 1, size=(3, 9)).astype(np.float32)
    out = {"a": a, "b": b}
    for method in ("l2", "zscore", "minmax", "rrf"):
        out[method] = fusion.normalize(a, method)
        out[f"fused_{method}"] = fusion.fuse_rows([a, b], [1.0, 0.5], method)
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A gallery with labels and one saved checkpoint per family (clip, blip, attributes)."""
    from trafficsearch.models.attributes import create_attribute_model
    from trafficsearch.models.blip import create_blip
    from trafficsearch.models.clip import save_checkpoint
    from trafficsearch.testing.datasets import make_split

    root = tmp_path_factory.mktemp("golden")
    with _deterministic():
        make_split(root, "val", 16, seed=2)
        save_checkpoint(root / "clip", _tiny_clip())  # type: ignore[arg-type]
        create_blip("blip-tiny", seed=0).save(root / "blip")
        create_attribute_model(seed=0).save(root / "attributes")
    return {
        "root": root,
        "gallery": root / "val" / "val_images",
        "labels": root / "val" / "val_label.txt",
        "clip": root / "clip",
        "blip": root / "blip",
        "attributes": root / "attributes",
    }


def _rankings(engine: object, rerank: bool = False, k: int = 6) -> dict[str, np.ndarray]:
    hits = engine.search(TEXTS, k=k, rerank=rerank)  # type: ignore[attr-defined]
    return {
        "names": np.array([[h.name for h in row] for row in hits]),
        "scores": np.array([[h.score for h in row] for row in hits], dtype=np.float32),
    }


def case_index_search(ck: dict[str, Path]) -> dict[str, np.ndarray]:
    """A CLIP checkpoint indexed over the gallery, reopened from its manifest's spec, then searched."""
    from trafficsearch.index import build_index
    from trafficsearch.models.clip import load_checkpoint
    from trafficsearch.search.opener import open_engine

    out = ck["root"] / "idx-clip"
    if not (out / "manifest.json").is_file():
        model = load_checkpoint(ck["clip"])
        build_index(ck["gallery"], out, model, model_spec=ck["clip"], labels=ck["labels"], workers=0,
                    progress=False)  # fmt: skip
    return _rankings(open_engine(out))


def case_ensemble_search(ck: dict[str, Path]) -> dict[str, np.ndarray]:
    """clip + blip + attributes checkpoints fused (zscore, kind weights) and re-ranked by BLIP ITM."""
    from trafficsearch.search.ensemble import build_ensemble_index
    from trafficsearch.search.opener import open_engine

    root = ck["root"]
    config = {
        "name": "golden",
        "normalization": "zscore",
        "route": "off",
        "members": [
            {"name": "clip", "model": str(ck["clip"]), "weight": 1.0},
            {"name": "blip", "model": str(ck["blip"]), "weight": 0.5},
            {"name": "attributes", "model": str(ck["attributes"]), "weight": 0.5},
        ],
        "rerank": {"model": str(ck["blip"]), "k": 4, "form": "seed"},
    }
    (root / "golden.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    out = root / "idx-ensemble"
    if not (out / "ensemble.yaml").is_file():
        build_ensemble_index(root / "golden.yaml", ck["gallery"], out, labels=ck["labels"], progress=False,
                             workers=0)  # fmt: skip
    engine = open_engine(out)
    fused, reranked = _rankings(engine), _rankings(engine, rerank=True)
    return {"fused_names": fused["names"], "fused_scores": fused["scores"],
            "rerank_names": reranked["names"], "rerank_scores": reranked["scores"]}  # fmt: skip


MODEL_CASES: dict[str, Callable[[], dict[str, np.ndarray]]] = {
    "clip": case_clip,
    "blip": case_blip,
    "attributes": case_attributes,
    "fusion": case_fusion,
}
SEARCH_CASES: dict[str, Callable[[dict[str, Path]], dict[str, np.ndarray]]] = {
    "index_search": case_index_search,
    "ensemble_search": case_ensemble_search,
}


def _check(name: str, got: dict[str, np.ndarray], regen: bool) -> None:
    path = GOLDEN / f"{name}.npz"
    if regen:
        GOLDEN.mkdir(exist_ok=True)
        np.savez_compressed(path, **got)
        return
    assert path.is_file(), f"{path} is missing: python -m pytest tests/test_golden.py --regen-golden"
    with np.load(path, allow_pickle=False) as stored:
        want = {k: stored[k] for k in stored.files}
    assert sorted(got) == sorted(want), f"{name}: arrays differ from the golden file"
    for key, value in want.items():
        assert got[key].shape == value.shape, f"{name}.{key}: shape {got[key].shape} != {value.shape}"
        if value.dtype.kind in "US":
            assert got[key].tolist() == value.tolist(), f"{name}.{key}: ranking changed"
        else:
            np.testing.assert_allclose(got[key], value, rtol=RTOL, atol=ATOL, err_msg=f"{name}.{key}")


@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_model_outputs_match_golden(name: str, request: pytest.FixtureRequest) -> None:
    with _deterministic():
        got = MODEL_CASES[name]()
    _check(name, got, request.config.getoption("--regen-golden"))


@pytest.mark.parametrize("name", sorted(SEARCH_CASES))
def test_search_rankings_match_golden(
    name: str, checkpoints: dict[str, Path], request: pytest.FixtureRequest
) -> None:
    with _deterministic():
        got = SEARCH_CASES[name](checkpoints)
    _check(name, got, request.config.getoption("--regen-golden"))


def test_golden_cases_are_discriminative() -> None:
    """The stored rankings can catch a change: the rows differ, the first stage's adjacent scores are apart
    by far more than the tolerance (no near-tie that noise could flip), and ITM re-ranking moved something."""
    for name in SEARCH_CASES:
        with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as stored:
            for key in stored.files:
                if key.endswith("names"):
                    assert len({tuple(row) for row in stored[key]}) > 1, f"{name}.{key}: every row equal"
                elif not key.startswith("rerank"):
                    gaps = -np.diff(stored[key], axis=1)
                    assert (gaps > 10 * ATOL).all(), f"{name}.{key}: not sorted or a near-tie"
            if "rerank_names" in stored.files:
                assert (stored["rerank_names"] != stored["fused_names"]).any(), "re-ranking changed nothing"
