"""Shared fixtures: the real competition validation labels, the tiny BLIP, the tiny training data set and
colour galleries with labels (trafficsearch.testing writes them), and the --regen-golden option."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from trafficsearch.testing.color import ColorVehicles

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRAFFICSEARCH_SHARED", REPO.parent / "shared"))
VAL_DIR = SHARED / "data" / "cvpr2023-track2-val"


@pytest.fixture(autouse=True)
def _query_encoder_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` run in-process sets this process's query-encoder default to auto (and --query-encoder /
    --itm-head set the variables): each test gets back the library default and the environment it started
    with."""
    from trafficsearch.models import onnx_text

    monkeypatch.setattr(onnx_text, "_default", onnx_text._default)
    for name in (onnx_text.ENV, onnx_text.ITM_ENV):
        value = os.environ.get(name)
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def val_labels_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real val labels: from shared/ beside the checkout, else the copy packaged with trafficsearch."""
    path = VAL_DIR / "val_label.txt"
    if path.is_file():
        return path
    from trafficsearch.resources import extract_val_labels

    return extract_val_labels(tmp_path_factory.mktemp("val") / "val_label.txt")


@pytest.fixture(scope="session")
def infer_path() -> Path:
    path = VAL_DIR / "infer.txt"
    if not path.is_file():
        pytest.skip(f"official baseline predictions not found at {path}")
    return path


@pytest.fixture(scope="module")
def blip_tiny():  # noqa: ANN201 - a BlipRetrieval (transformers is imported only by the tests using it)
    """The packaged blip-tiny, seed 0, in eval mode: one per test module, since a module may change it."""
    from trafficsearch.models.blip import create_blip

    return create_blip("blip-tiny", seed=0).eval()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny competition-layout data set (12 train + 8 val coloured boxes); tests only read it."""
    from trafficsearch.testing.datasets import make_dataset

    return make_dataset(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="session")
def color_vehicles(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., ColorVehicles]:
    """`color_vehicles(n, text=...)`: a read-only colour gallery of n vehicles with its label file, written
    once per session for each (n, caption template)."""
    from trafficsearch.testing.color import write_color_vehicles

    made: dict[tuple[int, str], ColorVehicles] = {}

    def get(n: int, text: str = "A {color} Audi.") -> ColorVehicles:
        if (n, text) not in made:
            root = tmp_path_factory.mktemp(f"vehicles{n}")
            made[n, text] = write_color_vehicles(root / "images", root / "labels.txt", n, text)
        return made[n, text]

    return get


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/*.npz from the current code instead of comparing with them",
    )
