"""Building an ensemble index: every member's index over one gallery, then ensemble.yaml (written last)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trafficsearch.errors import IndexError_
from trafficsearch.index.build import build_index
from trafficsearch.index.itm_tokens import has_itm_tokens, write_itm_tokens
from trafficsearch.models.factory import load_model
from trafficsearch.search.ensemble.config import (
    ENSEMBLE_FILE,
    load_ensemble,
    member_index_dir,
    save_ensemble,
)


def build_ensemble_index(
    config_path: str | Path,
    gallery: str | Path,
    out: str | Path,
    *,
    labels: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    models: dict[str, Any] | None = None,
    itm_tokens: bool = True,
    **build_kwargs: Any,
) -> Path:
    """Index the gallery once per member (each resumable, via index/build.py), then commit ensemble.yaml.

    `models` maps model specs to loaded models (tests, or a caller that holds them already). With
    `itm_tokens`, a re-ranker that is also a member gets its image tokens stored in that member's index.
    """
    config = load_ensemble(config_path)  # relative paths resolved against the file's directory
    out = Path(out)
    models = dict(models or {})
    for m in config.members:
        index_dir = member_index_dir(out, m)
        if m.index and (index_dir / "manifest.json").is_file():
            continue  # an existing index the file points at: reused as is
        if m.model not in models:
            models[m.model] = load_model(m.model, device=device)
        model = models[m.model]
        result = build_index(
            gallery,
            index_dir,
            model,
            model_spec=m.model,
            labels=labels,
            device=device,
            progress=progress,
            **build_kwargs,
        )
        if not result.merged:
            raise IndexError_(
                f"member {m.name!r} is not merged yet (other ranks still running)", path=index_dir
            )
    if itm_tokens and config.rerank:  # the re-ranker's image tokens beside its member's index
        for m in config.members:
            if m.model != config.rerank.model:
                continue
            model = models.get(m.model) or load_model(m.model, device=device)
            if hasattr(model, "itm_image_tokens") and not has_itm_tokens(member_index_dir(out, m), model):
                write_itm_tokens(member_index_dir(out, m), model, progress=progress)
            break
    save_ensemble(config, out / ENSEMBLE_FILE)
    return out
