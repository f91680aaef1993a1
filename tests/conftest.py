"""Shared fixtures: paths to the real competition validation labels."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRAFFICSEARCH_SHARED", REPO.parent / "shared"))
VAL_DIR = SHARED / "data" / "cvpr2023-track2-val"


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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/*.npz from the current code instead of comparing with them",
    )
