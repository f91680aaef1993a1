"""open_clip models behind the RetrievalModel interface, plus the text-tower split that training caches on.

Any open_clip architecture is created by name with a pretrained tag, a local weights file, or nothing
(random init). The text tower is seen as trunk (everything up to the pooled feature) + projection, so a
frozen trunk's pooled features can be computed once per unique text and only the projection trained.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from trafficsearch.data.transforms import Preprocess, build_transform
from trafficsearch.errors import ConfigError
from trafficsearch.ioutil import atomic_write_json, atomic_write_text, file_sha256
from trafficsearch.models import registry
from trafficsearch.models.base import RetrievalModel
from trafficsearch.models.checkpoint import CONFIG_YAML, WEIGHTS, read_model_json, state_digest, write_dir
from trafficsearch.models.family import Device, register_family
from trafficsearch.models.missing import missing_error
from trafficsearch.models.pretrained import FROM_BASE, check_from_base

log = logging.getLogger(__name__)


# open_clip's eval resize modes and the project's geometry that does the same
_KIND_OF_RESIZE_MODE = {"shortest": "openclip", "longest": "pad", "squash": "stretch"}


def _preprocess_of(model: nn.Module, kind: str | None) -> Preprocess:
    """Eval preprocessing from open_clip's `model.visual.preprocess_cfg` (its PreprocessCfg fields).

    kind=None keeps the model's own geometry (a pretrained tag's resize_mode and fill_color); a kind that a
    config asks for (e.g. the seed's "pad") replaces only the geometry, keeping mean/std/interpolation.
    """
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = PreprocessCfg(**merge_preprocess_dict(PreprocessCfg(), getattr(model.visual, "preprocess_cfg", {})))
    size = cfg.size if cfg.size else model.visual.image_size
    if isinstance(size, list | tuple):
        size = size[0]
    own = _KIND_OF_RESIZE_MODE.get(cfg.resize_mode, "openclip")
    fill = int(cfg.fill_color or 0) if kind is None and own == "pad" else 0
    mean = tuple(float(x) for x in (cfg.mean if isinstance(cfg.mean, list | tuple) else (cfg.mean,) * 3))
    std = tuple(float(x) for x in (cfg.std if isinstance(cfg.std, list | tuple) else (cfg.std,) * 3))
    return Preprocess(
        kind=own if kind is None else kind,
        image_size=int(size),
        mean=mean,
        std=std,
        interpolation=cfg.interpolation if cfg.interpolation in ("bicubic", "bilinear") else "bicubic",
        fill=fill,
    )


def _portable_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Model config for model.json, with the local MiniLM folder written back as "@minilm" (portable)."""
    cfg = json.loads(json.dumps(cfg))
    text = cfg.get("text_cfg", {})
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if text.get(key) and Path(text[key]) == registry.minilm_dir():
            text[key] = registry.MINILM
    return cfg


# ---------------------------------------------------------------------------------------------- text split
def is_hf_text(model: nn.Module) -> bool:
    return hasattr(model, "text") and hasattr(model.text, "transformer") and hasattr(model.text, "pooler")


def trim_padding(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Drop all-padding trailing columns for HF trunks: with the attention mask and a masked mean pool the
    result is the same, at a fraction of the cost (captions average ~26 of 64 tokens). open_clip's own text
    transformer needs its full context length (fixed positional table), so it is left as is."""
    if not is_hf_text(model):
        return tokens
    pad = model.text.config.pad_token_id
    used = (tokens != pad).any(dim=0).nonzero()
    return tokens[:, : int(used.max()) + 1] if len(used) else tokens


def text_pooled(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Text trunk: tokens -> pooled feature before the projection."""
    if is_hf_text(model):
        text = model.text
        mask = (tokens != text.config.pad_token_id).long()
        out = text.transformer(input_ids=tokens, attention_mask=mask)
        return text.pooler(out, mask)
    if hasattr(model, "token_embedding"):  # open_clip CLIP with its own text transformer
        from open_clip.transformer import text_global_pool

        cast_dtype = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding.to(cast_dtype)
        x = model.transformer(x, attn_mask=model.attn_mask)
        x = model.ln_final(x)
        return text_global_pool(
            x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None)
        )
    raise ConfigError(f"cannot split the text tower of {type(model).__name__} into trunk and projection")


def text_project(model: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    """Text projection: pooled feature -> joint embedding space (not normalised)."""
    proj = model.text.proj if is_hf_text(model) else model.text_projection
    if proj is None:
        return pooled
    if isinstance(proj, nn.Module):
        return proj(pooled)
    return pooled @ proj


def text_projection_params(model: nn.Module) -> list[nn.Parameter]:
    proj = model.text.proj if is_hf_text(model) else model.text_projection
    if proj is None:
        return []
    return list(proj.parameters()) if isinstance(proj, nn.Module) else [proj]


def text_trunk_params(model: nn.Module) -> list[nn.Parameter]:
    proj_ids = {id(p) for p in text_projection_params(model)}
    if is_hf_text(model):
        params = list(model.text.parameters())
    else:
        params = [model.token_embedding.weight, model.positional_embedding]
        params += list(model.transformer.parameters()) + list(model.ln_final.parameters())
    return [p for p in params if id(p) not in proj_ids]


def text_trunk_modules(model: nn.Module) -> list[nn.Module]:
    """Modules of the trunk, so a frozen trunk can be kept in eval mode (no dropout) while the rest trains."""
    if is_hf_text(model):
        return [model.text.transformer, model.text.pooler]
    return [model.token_embedding, model.transformer, model.ln_final]


def lock_text(model: nn.Module, unlocked_layers: int = 0) -> None:
    """Freeze the text trunk except its last `unlocked_layers` layers; the projection always trains."""
    if unlocked_layers < 0:
        raise ConfigError("must be >= 0", field="model.unlocked_text_layers")
    # open_clip counts the projection as the last unlockable group of its own text transformer, but not of
    # an HF tower: shift by one so N means "N trunk layers" for both.
    groups = unlocked_layers if is_hf_text(model) or unlocked_layers == 0 else unlocked_layers + 1
    model.lock_text_tower(unlocked_layers=groups, freeze_layer_norm=True)
    for p in text_projection_params(model):
        p.requires_grad = True


def text_trunk_frozen(model: nn.Module) -> bool:
    return not any(p.requires_grad for p in text_trunk_params(model))


# ------------------------------------------------------------------------------------------------- wrapper
class OpenClipModel(RetrievalModel):
    """An open_clip model + tokenizer + eval preprocessing, encoding in batches without gradients."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[..., torch.Tensor],
        *,
        name: str,
        model_cfg: dict[str, Any],
        preprocess: Preprocess,
        source: dict[str, Any],
        device: str | torch.device = "cpu",
        text_batch_size: int = 256,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.model_cfg = model_cfg
        self.preprocess = preprocess
        self.source = source
        self.device = torch.device(device)
        self.text_batch_size = text_batch_size
        self.embed_dim = int(model_cfg["embed_dim"])
        self.image_size = preprocess.image_size
        self.model.to(self.device)

    # -- RetrievalModel
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return build_transform(self.preprocess)

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        finally:
            self.model.train(was_training)
        return F.normalize(out.float(), dim=-1)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            # similar lengths batched together, trailing padding trimmed (exact: HF trunks mean-pool by mask)
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            rows = []
            for start in range(0, len(texts), self.text_batch_size):
                chunk = [texts[i] for i in order[start : start + self.text_batch_size]]
                tokens = trim_padding(self.model, self.tokenize(chunk)).to(self.device)
                rows.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1))
        finally:
            self.model.train(was_training)
        if not rows:
            return torch.empty(0, self.embed_dim)
        out = torch.empty(len(texts), rows[0].shape[1], dtype=rows[0].dtype, device=rows[0].device)
        out[torch.tensor(order, device=out.device)] = torch.cat(rows)
        return out

    def manifest(self) -> dict[str, Any]:
        source = dict(self.source)
        if source.get("weights_sha256") is None:
            source["weights_sha256"] = "state:" + state_digest(self.model)
        return {
            "family": "open_clip",
            "name": self.name,
            "embed_dim": self.embed_dim,
            "image_size": self.image_size,
            **source,
            "preprocess": {**self.preprocess.to_dict(), "description": self.preprocess.describe()},
        }

    # -- model.json
    def model_json(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild this model with no registry: architecture + preprocessing."""
        return {
            "family": "open_clip",
            "name": self.name,
            "model_cfg": _portable_config(self.model_cfg),
            "preprocess": self.preprocess.to_dict(),
        }

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> OpenClipModel:
        return load_checkpoint(path, device=device)


def _quiet_transformers() -> None:
    """transformers prints a load report and progress bars per MiniLM load; keep the CLI output clean."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def _tokenizer_for(name: str, model_cfg: dict[str, Any]) -> Callable[..., torch.Tensor]:
    import open_clip

    text = model_cfg.get("text_cfg", {})
    hf_tok = text.get("hf_tokenizer_name")
    if hf_tok:
        from open_clip.tokenizer import HFTokenizer

        try:
            return HFTokenizer(hf_tok, context_length=text.get("context_length", 77))
        except OSError as exc:  # not in the local Hugging Face cache (offline), or a folder without it
            raise missing_error(f"the {hf_tok} tokenizer (tokenizer.json + config.json)", exc) from exc
    return open_clip.get_tokenizer(name)


def _text_files_missing(cfg: dict[str, Any], exc: OSError) -> ConfigError:
    """An OSError while open_clip builds an HF text tower: its config/weights are not on disk."""
    hf_name = cfg.get("text_cfg", {}).get("hf_model_name") or "the text tower"
    return missing_error(f"the Hugging Face files of {hf_name} (config.json, weights)", exc)


def _tag_missing(name: str, tag: str, exc: Exception) -> ConfigError:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    where = f"hub: {cfg['hf_hub']}" if cfg.get("hf_hub") else cfg.get("url") or cfg.get("file", "?")
    return missing_error(f"{name} weights for tag {tag!r} ({where})", exc, field="model.pretrained")


def build_from_config(
    name: str,
    model_cfg: dict[str, Any],
    *,
    pretrained: str | None = None,
    load_text_pretrained: bool = True,
    transform: str = "pad",
    device: str | torch.device = "cpu",
) -> OpenClipModel:
    """Create an open_clip model from a full architecture config (registered under a content-hash name)."""
    import open_clip

    cfg = registry.resolve_placeholders(model_cfg)
    if name in registry.list_models() and registry.get_model_config(name) == cfg:
        reg_name = name
    else:
        reg_name = "ts-cfg-" + hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
        registry.register_model_config(reg_name, cfg)
    source: dict[str, Any] = {"pretrained": pretrained, "checkpoint": None, "weights_sha256": None}
    if pretrained and os.path.isfile(pretrained):
        source["checkpoint"] = str(Path(pretrained).resolve())
        source["weights_sha256"] = file_sha256(pretrained)
    _quiet_transformers()
    try:
        # open_clip warns "initialized randomly" on the root logger whenever pretrained is None, also when
        # a checkpoint's weights are loaded right after; keep that noise out of the user's terminal.
        root_logger = logging.getLogger()
        level = root_logger.level
        root_logger.setLevel(logging.ERROR if not pretrained else level)
        try:
            model = open_clip.create_model(
                reg_name, pretrained=pretrained, device="cpu", pretrained_text=load_text_pretrained
            )
        finally:
            root_logger.setLevel(level)
    except OSError as exc:
        raise _text_files_missing(cfg, exc) from exc
    except RuntimeError as exc:
        raise ConfigError(
            f"cannot create open_clip model {name!r} with pretrained={pretrained!r}: {exc}"
        ) from exc
    model.eval()
    return OpenClipModel(
        model,
        _tokenizer_for(reg_name, cfg),
        name=name,
        model_cfg=cfg,
        preprocess=_preprocess_of(model, transform),
        source=source,
        device=device,
    )


def create_clip(
    name: str,
    pretrained: str | None = None,
    *,
    transform: str | None = None,
    device: str | torch.device = "cpu",
) -> OpenClipModel:
    """Create any open_clip model by name: pretrained = tag (may download), local weights file, or None.

    transform=None: a tag keeps open_clip's own preprocessing for it (resize_mode, fill_color, mean/std,
    interpolation); a weights file or random init gets the project's pad-to-square. A transform given
    (a training config's data.transform) replaces the geometry only."""
    cfg = registry.get_model_config(name)
    if pretrained and not os.path.isfile(pretrained):
        import open_clip

        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise ConfigError(
                f"{pretrained!r} is neither a file nor a pretrained tag of {name} "
                f"(tags: {', '.join(tags) or 'none'})",
                field="model.pretrained",
            )
        # A tag: let open_clip resolve its weights and preprocessing under the real model name.
        root_logger = logging.getLogger()
        level = root_logger.level
        root_logger.setLevel(logging.CRITICAL)  # open_clip logs a failed download before raising it
        try:
            model = open_clip.create_model(name, pretrained=pretrained, device="cpu")
        except OSError as exc:
            raise _text_files_missing(cfg, exc) from exc
        except RuntimeError as exc:
            if "Failed to download" in str(exc):  # offline and not in the cache
                raise _tag_missing(name, pretrained, exc) from exc
            raise ConfigError(f"cannot load {name} weights {pretrained!r}: {exc}") from exc
        finally:
            root_logger.setLevel(level)
        model.eval()
        return OpenClipModel(
            model,
            _tokenizer_for(name, cfg),
            name=name,
            model_cfg=cfg,
            preprocess=_preprocess_of(model, transform),
            source={"pretrained": pretrained, "checkpoint": None, "weights_sha256": None},
            device=device,
        )
    return build_from_config(name, cfg, pretrained=pretrained, transform=transform or "pad", device=device)


# --------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(
    path: str | Path,
    model: OpenClipModel,
    config_yaml: str | None = None,
    extra_files: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint dir; `extra_files` maps file names to objects for torch.save (train state)."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in model.model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        info = model.model_json()
        info["weights_sha256"] = file_sha256(tmp / WEIGHTS)
        atomic_write_json(tmp / "model.json", info)
        if config_yaml is not None:
            atomic_write_text(tmp / CONFIG_YAML, config_yaml)
        for name, obj in (extra_files or {}).items():
            torch.save(obj, tmp / name)

    return write_dir(path, write)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> OpenClipModel:
    """Rebuild the model from model.json and load weights.safetensors (strict: every tensor must match)."""
    from safetensors.torch import load_file

    path = Path(path)
    info = read_model_json(path, required=("name", "model_cfg", "preprocess"))
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ConfigError("checkpoint has no weights.safetensors", path=path)
    preprocess = Preprocess.from_dict(info["preprocess"])
    # a packaged pre-trained checkpoint (models/pretrained.py) stores only what training changed: the rest
    # (the frozen HF text trunk) comes from the trunk's own package, so build with its weights then
    partial = bool(info.get(FROM_BASE))
    wrapped = build_from_config(
        info["name"], info["model_cfg"], load_text_pretrained=partial, transform=preprocess.kind, device="cpu"
    )
    state = load_file(str(weights))
    try:
        result = wrapped.model.load_state_dict(state, strict=not partial)
    except RuntimeError as exc:
        raise ConfigError(
            f"weights do not match model.json: {str(exc).splitlines()[0]}", path=weights
        ) from None
    if partial:
        check_from_base(info, list(result.missing_keys), list(result.unexpected_keys), path)
    wrapped.model.eval()
    wrapped.preprocess = preprocess
    wrapped.image_size = preprocess.image_size
    wrapped.source = {
        "pretrained": None,
        "checkpoint": str(path.resolve()),
        "weights_sha256": file_sha256(weights),
    }
    wrapped.model.to(torch.device(device))
    wrapped.device = torch.device(device)
    return wrapped


def create_from_spec(rest: str, device: Device = "cpu") -> OpenClipModel:
    """`open_clip:NAME[:TAG or weights file]` or clip-retrieval's `open_clip:NAME/TAG` (rest: after the
    prefix). Without a tag the model is randomly initialised (an HF text trunk still loads its weights)."""
    if ":" in rest:
        name, _, pretrained = rest.partition(":")
    else:
        name, _, pretrained = rest.partition("/")
    if not name:
        raise ConfigError(
            f"model spec 'open_clip:{rest}' names no model: use open_clip:<name>[:<tag or path>]"
        )
    return create_clip(name, pretrained or None, device=device)


register_family("open_clip", load_checkpoint, create_from_spec)
