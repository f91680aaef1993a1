"""Which files a model spec needs on disk, whether the local caches hold them, and how to fetch them.

An offline GPU box can only load weights, tokenizers and configs that are already in the Hugging Face hub
cache, open_clip's URL cache or a local folder. This module answers, per model, "which file, where must it
be, is it there, and which command fetches it on a connected machine" (`trafficsearch doctor`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trafficsearch.models.missing import hub_cache_dir

OPEN_CLIP_PREFIX = "open_clip:"
BLIP_PREFIX = "blip:"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's order
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
CHECKPOINT_FILES = ("model.json", "weights.safetensors")


@dataclass(frozen=True)
class Need:
    """One file (or one of several equivalent files) a model needs."""

    what: str  # e.g. "ViT-H-14 weights (laion2b_s32b_b79k)"
    location: str  # where it must be: a hub repo in the cache, a cache file, or a local path
    found: str | None  # the file found, None when missing
    fetch: str | None = None  # a command that fetches it on a connected machine (None: see `hf` or yours)
    hf: tuple[str, str] | None = None  # (repo, file) to fetch with `hf download` into the hub cache

    @property
    def present(self) -> bool:
        return self.found is not None


# ------------------------------------------------------------------------------------------- cache dirs
def open_clip_url_cache() -> Path:
    """Where open_clip keeps weights it downloads by URL (tags without a hub repo)."""
    return Path.home() / ".cache" / "clip"


def torch_home() -> Path:
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "torch"


def cache_dirs() -> dict[str, Path]:
    return {
        "Hugging Face hub cache": hub_cache_dir(),
        "open_clip URL cache": open_clip_url_cache(),
        "TORCH_HOME": torch_home(),
    }


# ----------------------------------------------------------------------------------------------- lookups
def _hf_cached(repo: str, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=str(hub_cache_dir()))
    return found if isinstance(found, str) and os.path.isfile(found) else None


def hf_need(repo: str, filenames: tuple[str, ...], what: str, fetch_file: str | None = None) -> Need:
    """A file of a Hugging Face repo (any one of `filenames`): in a local folder named `repo` or the cache;
    `fetch_file` (default the first) is the one to download."""
    folder = Path(repo).expanduser()
    if folder.is_dir():
        found = next((str(folder / f) for f in filenames if (folder / f).is_file()), None)
        return Need(what, str(folder / filenames[0]), found, None)
    found = next((p for p in (_hf_cached(repo, f) for f in filenames) if p), None)
    return Need(what, f"hub: {repo}/{' | '.join(filenames)}", found, None, (repo, fetch_file or filenames[0]))


def _hf_text_needs(text_cfg: dict[str, Any], weights: bool) -> list[Need]:
    """An HF text tower (XLM-R...): config and tokenizer, and its weights when no CLIP file brings them."""
    needs: list[Need] = []
    model_name, tok_name = text_cfg.get("hf_model_name"), text_cfg.get("hf_tokenizer_name")
    for name, tokenizer in ((model_name, False), (tok_name, True)):
        if not name or name == "@minilm":
            continue
        if tokenizer:  # AutoTokenizer reads config.json (the type) and the fast or sentencepiece file
            needs.append(hf_need(name, ("config.json",), f"{name} config"))
            needs.append(hf_need(name, ("tokenizer.json", "sentencepiece.bpe.model"), f"{name} tokenizer"))
        else:
            needs.append(hf_need(name, ("config.json",), f"{name} config"))
            if weights:
                needs.append(hf_need(name, HF_WEIGHTS, f"{name} text weights"))
    return list({(n.what, n.location): n for n in needs}.values())


def open_clip_needs(name: str, pretrained: str | None) -> list[Need]:
    """An open_clip architecture by name with a pretrained tag, a weights file or nothing (random init)."""
    import open_clip

    from trafficsearch.models.registry import get_model_config

    cfg = get_model_config(name)
    needs: list[Need] = []
    checkpoint = False
    if pretrained:
        tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
        if tag_cfg:
            needs.append(tag_need(name, pretrained, tag_cfg))
            checkpoint = True
        else:
            path = Path(pretrained).expanduser()
            needs.append(Need(f"{name} weights file", str(path), str(path) if path.is_file() else None))
            checkpoint = True
    needs += _hf_text_needs(cfg.get("text_cfg", {}), weights=not checkpoint)
    return needs


def tag_need(name: str, tag: str, tag_cfg: dict[str, Any]) -> Need:
    what = f"{name} weights ({tag})"
    if tag_cfg.get("file"):
        path = Path(tag_cfg["file"])
        return Need(what, str(path), str(path) if path.is_file() else None)
    if tag_cfg.get("hf_hub"):
        # open_clip's convention: "org/repo/" means its default file; a .bin/.pth may have a .safetensors twin
        repo, filename = os.path.split(tag_cfg["hf_hub"])
        if not filename:
            files = OPEN_CLIP_WEIGHTS
        elif filename.endswith((".bin", ".pth")):
            files = (os.path.splitext(filename)[0] + ".safetensors", filename)
        else:
            files = (filename,)
        return hf_need(repo, files, what, fetch_file=files[-1])  # the .bin every open_clip repo has
    url = tag_cfg.get("url", "")
    target = open_clip_url_cache() / os.path.basename(url)
    return Need(what, str(target), str(target) if target.is_file() else None, f"curl -L {url} -o {target}")


def checkpoint_needs(path: Path, what: str) -> list[Need]:
    """A checkpoint directory of ours (model.json + weights.safetensors), and what its model.json names."""
    complete = all((path / f).is_file() for f in CHECKPOINT_FILES)
    needs = [Need(f"{what} ({' + '.join(CHECKPOINT_FILES)})", str(path), str(path) if complete else None)]
    try:
        info = json.loads((path / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return needs
    if isinstance(info, dict) and info.get("family", "open_clip") == "open_clip":
        # a packaged pre-trained checkpoint (from_base) reads the frozen trunk weights from their package
        text_cfg = (info.get("model_cfg") or {}).get("text_cfg", {})
        needs += _hf_text_needs(text_cfg, weights=bool(info.get("from_base")))
    return needs


def blip_needs(spec: str, base: Path | None = None, prefer_local: bool = False) -> list[Need]:
    """A BLIP spec as create_blip reads it: a checkpoint dir, a packaged config, or a Hugging Face id.

    A name that is none of these yet is a checkpoint still to be trained when `prefer_local` (ensemble
    members name fine-tuned checkpoints), else a Hugging Face id (a training config's model.name)."""
    from trafficsearch.models.blip import list_blip_configs, load_blip_config, packaged_config_for_hf_id

    path = _local(spec, base)
    if (path / "model.json").is_file():
        return checkpoint_needs(path, f"BLIP checkpoint {spec}")
    hf_id: str | None = spec
    if spec in list_blip_configs():
        hf_id = load_blip_config(spec).get("hf_id")
        if not hf_id:
            return []  # random init from a packaged config: nothing on disk
    elif (
        prefer_local
        and not path.is_dir()
        and packaged_config_for_hf_id(spec) is None
        and _hf_cached(spec, "config.json") is None
    ):
        return checkpoint_needs(path, f"BLIP checkpoint {spec}")
    assert hf_id is not None
    return [
        hf_need(hf_id, ("config.json",), f"{hf_id} config"),
        hf_need(hf_id, HF_WEIGHTS, f"{hf_id} weights"),
    ]


def _local(spec: str, base: Path | None) -> Path:
    path = Path(spec).expanduser()
    if not path.is_absolute() and base is not None and (base / path).exists():
        path = base / path
    return path


def spec_needs(spec: str, base: Path | None = None) -> list[Need]:
    """Needs of a model spec as ensembles and `--model` take it (relative paths tried against `base`)."""
    text = str(spec)
    if text.startswith(BLIP_PREFIX):
        return blip_needs(text[len(BLIP_PREFIX) :], base, prefer_local=True)
    if text.startswith(OPEN_CLIP_PREFIX):
        name, _, pretrained = text[len(OPEN_CLIP_PREFIX) :].partition(":")
        return open_clip_needs(name, pretrained or None)
    return checkpoint_needs(_local(text, base), f"checkpoint {text}")
