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
def val_labels_path() -> Path:
    path = VAL_DIR / "val_label.txt"
    if not path.is_file():
        pytest.skip(f"real validation labels not found at {path}")
    return path


@pytest.fixture(scope="session")
def infer_path() -> Path:
    path = VAL_DIR / "infer.txt"
    if not path.is_file():
        pytest.skip(f"official baseline predictions not found at {path}")
    return path
