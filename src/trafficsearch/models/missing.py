"""Where offline loaders look for Hugging Face files, and the one-line error for a file that is not there.

Kept apart from `requirements` (which knows every model family) so that the loaders in clip.py and blip.py
can raise it without importing the families back.
"""

from __future__ import annotations

import os
from pathlib import Path

from trafficsearch.errors import ConfigError

DOCTOR_HINT = "run `trafficsearch doctor CONFIG` for the files and the commands that fetch them"


def hub_cache_dir() -> Path:
    """The huggingface_hub cache, read from the environment now (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def missing_error(what: str, exc: BaseException, field: str | None = None) -> ConfigError:
    """A loader's OSError for files that are not on disk -> one line naming them and pointing to doctor."""
    return ConfigError(
        f"missing {what}: not in a local folder nor the Hugging Face hub cache {hub_cache_dir()} "
        f"({type(exc).__name__}, offline); {DOCTOR_HINT}",
        field=field,
    )
