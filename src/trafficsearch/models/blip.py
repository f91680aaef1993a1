"""BLIP for retrieval through transformers' `BlipForImageTextRetrieval`: ITC embeddings for the index, the ITM
head for re-ranking the fused top K. The seed's ITC + hard-negative ITM training loss lives beside its task,
in train/blip_loss.py (train/blip_task.py runs it inside the one training loop).

Why not call the HF `forward`: it never writes `[ENC]` over `[CLS]` for ITM (BLIP trained ITM that way; see
`bert_tokenizer`), builds its image mask on the CPU whatever the device, and runs the ViT again for each use.
We call its sub-modules (vision_model, text_encoder, vision_proj, text_proj, itm_head) directly, so the state
dict stays HF's and real checkpoints load unchanged. The learnable temperature (`model.temp`, init 0.07) is
clamped to [0.001, 0.5] by `clamp_temperature`, as BLIP does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from trafficsearch.data.transforms import OPENAI_MEAN, OPENAI_STD, Preprocess, build_transform
from trafficsearch.errors import ConfigError
from trafficsearch.ioutil import atomic_open, atomic_write_json, atomic_write_text, file_sha256
from trafficsearch.models.base import RetrievalModel
from trafficsearch.models.bert_tokenizer import (
    MAX_LENGTH,
    MINILM_SOURCE,
    BlipTokenizer,
    TokenBatch,
    resolve_source,
)
from trafficsearch.models.checkpoint import state_digest
from trafficsearch.models.family import Device, register_family
from trafficsearch.models.missing import DOCTOR_HINT
from trafficsearch.models.pretrained import FROM_BASE, check_from_base

CONFIG_DIR = Path(__file__).parent / "blip_configs"
BLIP_LARGE_ID = "Salesforce/blip-itm-large-coco"
FAMILY = "blip"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
MODEL_FILE = "model.json"
TEMP_INIT = 0.07
TEMP_MIN, TEMP_MAX = 0.001, 0.5
# What ITC's text feature (text_pool) and ITM's multimodal feature (itm_pool) read: BLIP's [CLS] / [ENC]
# token, or the masked mean of the tokens (MiniLM's own pooling).
TEXT_POOLS = ("cls", "mean")
# Salesforce/blip-itm-large-coco: ViT-L/16 + BERT-base with cross-attention, ~470M parameters. For building
# it offline with random weights (tests, memory and speed checks); transformers fills in the rest.
BLIP_LARGE_ARCHITECTURE: dict[str, Any] = {
    "vision_config": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 384,
        "patch_size": 16,
        "layer_norm_eps": 1e-5,
    },
    "text_config": {
        "vocab_size": 30524,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 512,
    },
    "image_text_hidden_size": 256,
}


def list_blip_configs() -> list[str]:
    """Names of our packaged BLIP configs (blip_configs/*.json)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_blip_config(name_or_path: str | Path) -> dict[str, Any]:
    """A packaged config name ("blip-tiny") or a JSON file path -> its dict."""
    path = Path(name_or_path)
    if not path.suffix == ".json":
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ConfigError(
            f"unknown BLIP config {str(name_or_path)!r}; packaged: {', '.join(list_blip_configs())}",
            field="model.name",
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", path=path, line=exc.lineno) from exc


class BlipRetrieval(nn.Module, RetrievalModel):
    """A `RetrievalModel` (ITC embeddings) plus the ITM head, around an HF `BlipForImageTextRetrieval`."""

    def __init__(
        self,
        hf_model: nn.Module,
        tokenizer: BlipTokenizer,
        preprocess: Preprocess,
        *,
        name: str,
        source: str | None = None,
        temp: float = TEMP_INIT,
        text_pool: str = "cls",
        itm_pool: str = "cls",
    ) -> None:
        super().__init__()
        for field, pool in (("text_pool", text_pool), ("itm_pool", itm_pool)):
            if pool not in TEXT_POOLS:
                raise ConfigError(f"{pool!r} is not one of {', '.join(TEXT_POOLS)}", field=field)
        cfg = hf_model.config
        if tokenizer.vocab_size > cfg.text_config.vocab_size:
            raise ConfigError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the text encoder only "
                f"{cfg.text_config.vocab_size} embeddings",
                field="text_config.vocab_size",
            )
        if tokenizer.max_length > cfg.text_config.max_position_embeddings:
            raise ConfigError(
                f"tokenizer max_length {tokenizer.max_length} exceeds the text encoder's "
                f"{cfg.text_config.max_position_embeddings} positions",
                field="tokenizer.max_length",
            )
        self.hf = hf_model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.name = name
        self.source = source or name
        self.embed_dim = int(cfg.image_text_hidden_size)
        self.image_size = int(preprocess.image_size)
        self.temp = nn.Parameter(torch.tensor(float(temp)))
        self.text_pool = text_pool
        self.itm_pool = itm_pool
        self.checkpoint_path: Path | None = None
        native = cfg.vision_config.image_size
        native = native[0] if isinstance(native, (list, tuple)) else native
        # HF interpolates the position embeddings on the fly when we run at another size (seed: 224 vs 384).
        self._interpolate = int(native) != self.image_size

    # -- plumbing ---------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.temp.device

    @property
    def model(self) -> BlipRetrieval:
        """The module whose state_dict a checkpoint holds (HF weights under "hf." + "temp"); the alias lets
        `checkpoint.save_checkpoint`, written for `OpenClipModel.model`, save BLIP unchanged."""
        return self

    def clamp_temperature(self) -> None:
        """BLIP clamps its learnable temperature in place before each use."""
        with torch.no_grad():
            self.temp.clamp_(TEMP_MIN, TEMP_MAX)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Trade compute for memory in both encoders (the seed checkpoints the ViT-L blocks)."""
        if enable:
            self.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.hf.gradient_checkpointing_disable()

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        return self.tokenizer(texts)

    # -- differentiable pieces (training and the public encoders share them) -------------------------------
    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B,3,S,S] -> the ViT's token sequence [B,T,W] (CLS first): ITC uses CLS, ITM attends to all."""
        out = self.hf.vision_model(pixel_values=pixels, interpolate_pos_encoding=self._interpolate)
        return out.last_hidden_state

    def image_features(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """ViT tokens -> L2-normalised ITC image embedding [B,D]."""
        return F.normalize(self.hf.vision_proj(image_tokens[:, 0, :]), dim=-1)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`[CLS]`-led ids -> L2-normalised ITC text embedding [N,D] (unimodal text encoder, no images).

        BLIP pools `[CLS]`; `text_pool: mean` (a config's) averages the tokens instead, for a text encoder
        initialised from a sentence-transformers BERT (MiniLM), trained with mean pooling: its frozen `[CLS]`
        output is the same vector for every caption (cosine 1.000 measured), so ITC could not learn."""
        out = self.hf.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(self.hf.text_proj(_pool(out, attention_mask, self.text_pool)), dim=-1)

    def itm_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_tokens: torch.Tensor
    ) -> torch.Tensor:
        """Pairwise text i x image i -> ITM logits [N,2] (class 1 = match). `[CLS]` becomes `[ENC]` here.

        BLIP reads the `[ENC]` output; `itm_pool: mean` (a config's) reads the masked mean of the tokens. Why:
        with MiniLM's self-attention frozen, the first token's output is one vector whatever the caption
        and image, so a match could not reach the head through it (the ITM loss stayed at the prior's,
        0.637 = H(1/3), and pairs scored AUC 0.50); every token's cross-attention reaches the mean."""
        ids = input_ids.clone()
        ids[:, 0] = self.tokenizer.enc_token_id
        out = self.hf.text_encoder(
            input_ids=ids, attention_mask=attention_mask, encoder_hidden_states=image_tokens
        )
        return self.hf.itm_head(_pool(out.last_hidden_state, attention_mask, self.itm_pool))

    # -- RetrievalModel ---------------------------------------------------------------------------------
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return build_transform(self.preprocess)

    def encode_images(self, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """[B,3,S,S] -> [B,D] float32 L2-normalised ITC embeddings on the CPU (eval mode, no grad)."""
        rows = []
        with _eval(self), torch.no_grad():
            for chunk in torch.split(pixels, batch_size):
                tokens = self.image_tokens(chunk.to(self.device, torch.float32))
                rows.append(self.image_features(tokens).float().cpu())
        return torch.cat(rows) if rows else torch.zeros(0, self.embed_dim)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """N texts -> [N,D] float32 L2-normalised ITC embeddings on the CPU (eval mode, no grad)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = []
        with _eval(self), torch.no_grad():
            for start in range(0, len(texts), batch_size):
                tok = self.tokenizer(texts[start : start + batch_size]).to(self.device)
                rows.append(self.text_features(tok.input_ids, tok.attention_mask).float().cpu())
        return torch.cat(rows) if rows else torch.zeros(0, self.embed_dim)

    def itm_scores(
        self,
        texts: Sequence[str],
        pixels: torch.Tensor,
        *,
        batch_size: int = 128,
        probabilities: bool = False,
    ) -> torch.Tensor:
        """Pairwise ITM: text i with image i -> [N] float32 on the CPU.

        Default: the raw match-class logit `itm_head[:,1]`, what the seed re-ranks with (L2-normalised across
        a query's candidates, then added to the fused score). `probabilities=True`: softmax P(match) instead.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if len(texts) != int(pixels.shape[0]):
            raise ValueError(
                f"itm_scores pairs text i with image i: got {len(texts)} texts, {pixels.shape[0]} images"
            )
        return self.itm_scores_tokens(
            texts, self.itm_image_tokens(pixels, batch_size=batch_size), batch_size=batch_size,
            probabilities=probabilities,
        )  # fmt: skip

    def itm_image_tokens(self, pixels: torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
        """[B,3,S,S] -> the ViT tokens ITM attends to, [B,T,W] on the CPU. Re-ranking caches them per gallery
        image: the ViT is then paid once per image, not once per (query, candidate) pair."""
        out = []
        with _eval(self), torch.no_grad():
            for chunk in torch.split(pixels, batch_size):
                out.append(self.image_tokens(chunk.to(self.device, torch.float32)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def itm_scores_tokens(
        self,
        texts: Sequence[str],
        image_tokens: torch.Tensor,
        *,
        batch_size: int = 128,
        probabilities: bool = False,
    ) -> torch.Tensor:
        """`itm_scores` from precomputed `itm_image_tokens`: text i with image i -> [N] float32."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if len(texts) != int(image_tokens.shape[0]):
            raise ValueError(
                f"ITM pairs text i with image i: got {len(texts)} texts, {image_tokens.shape[0]} images"
            )
        if not texts:
            return torch.zeros(0)
        # each distinct text is tokenized once (a query is paired with all K candidates), and pairs go in
        # batches of similar token length, each trimmed to its longest text: little compute spent on padding
        distinct = list(dict.fromkeys(texts))
        where = {text: i for i, text in enumerate(distinct)}
        which = torch.tensor([where[text] for text in texts])
        tok = self.tokenizer(distinct)
        lengths = tok.attention_mask.sum(dim=1)
        order = torch.argsort(lengths[which], stable=True)
        out = torch.empty(len(texts), dtype=torch.float32)
        with _eval(self), torch.no_grad():
            for start in range(0, len(texts), batch_size):
                pairs = order[start : start + batch_size]
                rows = which[pairs]
                width = int(lengths[rows].max())
                ids = tok.input_ids[rows, :width].to(self.device)
                mask = tok.attention_mask[rows, :width].to(self.device)
                tokens = image_tokens[pairs].to(self.device, torch.float32)
                logits = self.itm_logits(ids, mask, tokens).float()
                out[pairs] = (logits.softmax(-1)[:, 1] if probabilities else logits[:, 1]).cpu()
        return out

    def manifest(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "family": FAMILY,
            "name": self.name,
            "source": self.source,
            "embed_dim": self.embed_dim,
            "image_size": self.image_size,
            "preprocess": self.preprocess.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
            "checkpoint": None,
            "weights_sha256": None,
        }
        if self.checkpoint_path is not None and (self.checkpoint_path / WEIGHTS_FILE).is_file():
            info["checkpoint"] = str(self.checkpoint_path)
            info["weights_sha256"] = file_sha256(self.checkpoint_path / WEIGHTS_FILE)
        else:  # in-memory weights (fresh or training): a digest of the tensors still identifies them
            info["weights_sha256"] = "state:" + state_digest(self)
        return info

    # -- checkpoint directory -----------------------------------------------------------------------------
    def save(
        self, directory: str | Path, config: dict[str, Any] | str | None = None, *, remember: bool = True
    ) -> Path:
        """Write weights.safetensors + model.json (+ config.yaml when `config`, a dict or YAML text, is
        given), each atomically. `remember=False` leaves `checkpoint_path` alone: the training loop saves
        into a temporary folder that it then renames, so the path would go stale."""
        from safetensors.torch import save

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        with atomic_open(out / WEIGHTS_FILE, "wb") as handle:
            handle.write(save(state, metadata={"format": "pt", "family": FAMILY}))
        atomic_write_json(out / MODEL_FILE, self.model_json())
        if config is not None:
            if not isinstance(config, str):
                import yaml

                config = yaml.safe_dump(config, sort_keys=False)
            atomic_write_text(out / "config.yaml", config)
        if remember:
            self.checkpoint_path = out
        return out

    def load_weights(self, directory: str | Path) -> None:
        """Load a checkpoint directory's weights.safetensors into this same-architecture model, strictly."""
        from safetensors.torch import load_file

        weights = Path(directory) / WEIGHTS_FILE
        if not weights.is_file():
            raise ConfigError("weights.safetensors is missing", path=weights)
        try:
            self.load_state_dict(load_file(str(weights), device=str(self.device)), strict=True)
        except RuntimeError as exc:
            raise ConfigError(
                f"weights do not match this model: {str(exc).splitlines()[0]}", path=weights
            ) from None

    def model_json(self) -> dict[str, Any]:
        return {
            "family": FAMILY,
            "format": FORMAT_VERSION,
            "name": self.name,
            "source": self.source,
            "blip_config": _config_dict(self.hf.config),
            "preprocess": self.preprocess.to_dict(),
            "tokenizer": {"source": self.tokenizer.source, "max_length": self.tokenizer.max_length},
            "text_pool": self.text_pool,
            "itm_pool": self.itm_pool,
        }


def _pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """[N,L,H] token outputs -> [N,H]: the first token's, or the mean over the unmasked tokens."""
    if how == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return hidden[:, 0, :]


class _eval:
    """Context manager: eval mode inside (no dropout), the caller's mode restored after."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.was_training = module, module.training

    def __enter__(self) -> None:
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        self.module.train(self.was_training)


def _config_dict(cfg: Any) -> dict[str, Any]:
    keep = ("vision_config", "text_config", "image_text_hidden_size", "projection_dim", "initializer_range")
    full = cfg.to_dict()
    return {k: full[k] for k in keep if k in full}


# -- creation -------------------------------------------------------------------------------------------
def _preprocess(d: dict[str, Any] | None, default_size: int) -> Preprocess:
    d = dict(d or {})
    d.setdefault("kind", "pad")
    d.setdefault("image_size", default_size)
    d.setdefault("mean", list(OPENAI_MEAN))  # BLIP normalises with the OpenAI CLIP statistics too
    d.setdefault("std", list(OPENAI_STD))
    return Preprocess.from_dict(d)


def _tokenizer(d: dict[str, Any] | None) -> BlipTokenizer:
    d = d or {}
    return BlipTokenizer(d.get("source", MINILM_SOURCE), int(d.get("max_length", MAX_LENGTH)))


def _build_random(blip_config: dict[str, Any]) -> nn.Module:
    from transformers import BlipConfig, BlipForImageTextRetrieval

    try:
        cfg = BlipConfig(**blip_config)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid BLIP config: {exc}", field="blip_config") from exc
    return BlipForImageTextRetrieval(cfg)


def init_text_from_bert(hf_model: nn.Module, source: str | Path = MINILM_SOURCE) -> int:
    """Copy a pretrained BERT (default: the packaged MiniLM) into BLIP's text encoder, as BLIP starts from
    bert-base: same-named tensors are copied, cross-attention stays random, the `[DEC]`/`[ENC]` rows start
    as `[CLS]`, and BERT's token-type-0 vector is folded into the position embeddings (BLIP has none).
    Returns the number of tensors copied."""
    from safetensors.torch import load_file

    vocab = resolve_source(source)
    weights = vocab.parent / "model.safetensors"
    if not weights.is_file():
        raise ConfigError("no model.safetensors beside the BERT vocab", path=weights, field="text_init")
    bert = {k.removeprefix("bert."): v for k, v in load_file(str(weights)).items()}
    target = hf_model.text_encoder.state_dict()
    copied = 0
    with torch.no_grad():
        for key, tensor in target.items():
            src = bert.get(key)
            if src is None:
                continue
            if key == "embeddings.word_embeddings.weight":
                n = min(src.shape[0], tensor.shape[0])
                tensor[:n] = src[:n]
                cls_id = vocab.read_text(encoding="utf-8").splitlines().index("[CLS]")
                tensor[n:] = src[cls_id]
            elif key == "embeddings.position_embeddings.weight":
                n = min(src.shape[0], tensor.shape[0])
                token_type = bert.get("embeddings.token_type_embeddings.weight")
                tensor[:n] = src[:n] + (token_type[0] if token_type is not None else 0.0)
            elif src.shape == tensor.shape:
                tensor.copy_(src)
            else:
                raise ConfigError(
                    f"pretrained text tensor {key} has shape {tuple(src.shape)}, "
                    f"BLIP's is {tuple(tensor.shape)}",
                    field="blip_config.text_config",
                )
            copied += 1
    return copied


def _vision_size(hf_model: nn.Module) -> int:
    size = hf_model.config.vision_config.image_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def create_blip(
    spec: str | Path,
    *,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    seed: int | None = 0,
    cache_dir: str | Path | None = None,
    local_files_only: bool = True,
) -> BlipRetrieval:
    """Build a BLIP retrieval model from, in this order of lookup:

    - a checkpoint directory of ours (model.json) -> `load_blip`;
    - a packaged config name ("blip-tiny", "blip-small": random init with `seed`; "blip-large": the real
      weights of Salesforce/blip-itm-large-coco from the local HF cache) or a path to such a JSON file;
    - a Hugging Face model id or local HF folder (config.json + weights), never downloaded unless
      `local_files_only=False`; a packaged config naming the id lends its preprocessing and tokenizer
      (Salesforce/blip-itm-large-coco runs at the seed's 224 px, like "blip-large").
    `image_size` overrides the preprocessing size (the ViT interpolates its position embeddings).
    """
    text = str(spec)
    path = Path(text)
    if (path / MODEL_FILE).is_file():
        return load_blip(path, device=device)
    cfg: dict[str, Any] | None = None
    if path.suffix == ".json" or text in list_blip_configs():
        cfg = load_blip_config(path if path.suffix == ".json" else text)
    elif not path.exists():
        cfg = packaged_config_for_hf_id(text)  # "Salesforce/blip-itm-large-coco" gets blip-large's 224 px
    if cfg is not None and "hf_id" not in cfg:
        if "blip_config" not in cfg:
            raise ConfigError(
                "a BLIP config needs 'blip_config' (or 'hf_id')", path=text, field="blip_config"
            )
        if seed is not None:
            torch.manual_seed(seed)
        hf_model = _build_random(cfg["blip_config"])
        if cfg.get("text_init"):
            init_text_from_bert(hf_model, cfg["text_init"])
        name, source = (path.stem if path.suffix == ".json" else text), "random-init"
    else:
        hf_id = cfg["hf_id"] if cfg is not None else text
        hf_model = _from_pretrained(hf_id, cache_dir=cache_dir, local_files_only=local_files_only)
        name, source = hf_id, hf_id
        cfg = cfg or {"tokenizer": _hf_tokenizer_source(hf_id)}
    pre = _preprocess(cfg.get("preprocess"), _vision_size(hf_model))
    if image_size is not None:
        pre = replace(pre, image_size=int(image_size))
    model = BlipRetrieval(
        hf_model,
        _tokenizer(cfg.get("tokenizer")),
        pre,
        name=name,
        source=source,
        text_pool=cfg.get("text_pool", "cls"),
        itm_pool=cfg.get("itm_pool", "cls"),
    )
    return model.to(device)


def packaged_config_for_hf_id(hf_id: str) -> dict[str, Any] | None:
    """The packaged config naming this Hugging Face id (its preprocessing and tokenizer), if any."""
    for name in list_blip_configs():
        cfg = load_blip_config(name)
        if cfg.get("hf_id") == hf_id:
            return cfg
    return None


def _hf_tokenizer_source(hf_id: str) -> dict[str, Any]:
    """A local HF folder with its own vocab.txt keeps it; else the packaged BERT-uncased vocab."""
    folder = Path(hf_id)
    source = str(folder) if (folder / "vocab.txt").is_file() else MINILM_SOURCE
    return {"source": source, "max_length": MAX_LENGTH}


def _from_pretrained(hf_id: str, *, cache_dir: str | Path | None, local_files_only: bool) -> nn.Module:
    from transformers import BlipForImageTextRetrieval

    try:
        return BlipForImageTextRetrieval.from_pretrained(
            hf_id, cache_dir=cache_dir, local_files_only=local_files_only
        )
    except OSError as exc:
        where = (
            f"cache {cache_dir}" if cache_dir is not None else "Hugging Face cache (HF_HOME / HF_HUB_CACHE)"
        )
        raise ConfigError(
            f"BLIP weights {hf_id!r} (config.json + model.safetensors) are not available offline: not a "
            f"local folder and not in the {where}. Fetch them where there is internet (`hf download {hf_id} "
            f"config.json model.safetensors`) and copy the cache or folder here, or use a packaged config "
            f"({', '.join(list_blip_configs())}); {DOCTOR_HINT}",
            field="model.name",
        ) from exc


def load_blip(path: str | Path, device: str | torch.device = "cpu") -> BlipRetrieval:
    """Load a checkpoint directory written by `BlipRetrieval.save` (weights.safetensors + model.json)."""
    from safetensors.torch import load_file

    directory = Path(path)
    meta_path, weights_path = directory / MODEL_FILE, directory / WEIGHTS_FILE
    if not meta_path.is_file():
        raise ConfigError("not a BLIP checkpoint directory: model.json is missing", path=meta_path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", path=meta_path, line=exc.lineno) from exc
    if meta.get("family") != FAMILY:
        raise ConfigError(
            f"expected family 'blip', got {meta.get('family')!r}", path=meta_path, field="family"
        )
    if not weights_path.is_file():
        raise ConfigError("weights.safetensors is missing", path=weights_path)
    hf_model = _build_random(meta["blip_config"])
    base = meta.get(FROM_BASE) or {}
    if base.get("text_init"):  # a packaged pre-trained checkpoint: the frozen BERT part from its package
        init_text_from_bert(hf_model, base["text_init"])
    pre = _preprocess(meta.get("preprocess"), _vision_size(hf_model))
    model = BlipRetrieval(
        hf_model,
        _tokenizer(meta.get("tokenizer")),
        pre,
        name=meta.get("name", directory.name),
        source=meta.get("source"),
        text_pool=meta.get("text_pool", "cls"),
        itm_pool=meta.get("itm_pool", "cls"),
    )
    state = load_file(str(weights_path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if base:
        check_from_base(meta, list(missing), list(unexpected), directory)
    elif missing or unexpected:
        raise ConfigError(
            f"weights do not match model.json: missing {missing[:3]}, unexpected {unexpected[:3]}",
            path=weights_path,
        )
    model.checkpoint_path = directory
    return model.to(device)


def _create_from_spec(rest: str, device: Device = "cpu") -> BlipRetrieval:
    """`blip:<checkpoint dir | packaged config | HF id>` (rest = after the prefix)."""
    return create_blip(rest, device=device)


register_family(FAMILY, load_blip, _create_from_spec)


# -- partial fine-tuning --------------------------------------------------------------------------------
def lock_image(model: BlipRetrieval, unlocked_layers: int = 0) -> list[nn.Module]:
    """Freeze the ViT except its last `unlocked_layers` layers (+ the post-norm when any is unlocked), as
    open_clip's `lock_image_tower(unlocked_groups=N)` does; `vision_proj` (the ITC head) always trains.
    Returns the fully frozen sub-modules (to keep in eval mode)."""
    vit = model.hf.vision_model
    layers = list(vit.encoder.layers)
    if not 0 <= unlocked_layers <= len(layers):
        raise ConfigError(
            f"must be in [0, {len(layers)}] (the ViT has {len(layers)} layers), got {unlocked_layers}",
            field="model.unlocked_image_groups",
        )
    vit.requires_grad_(False)
    keep = layers[len(layers) - unlocked_layers :]
    if unlocked_layers:
        keep.append(vit.post_layernorm)
    for module in keep:
        module.requires_grad_(True)
    frozen = [vit.embeddings, *layers[: len(layers) - unlocked_layers]]
    return frozen if unlocked_layers else [*frozen, vit.post_layernorm]


def lock_text(
    model: BlipRetrieval, unlocked_layers: int = 0, *, keep_cross_attention: bool = True
) -> list[nn.Module]:
    """Freeze the text encoder's BERT part (embeddings, self-attention, feed-forward) except its last
    `unlocked_layers` layers; `text_proj` and the ITM head always train.

    Why cross-attention stays trainable by default: it is what grounds text in the image for ITM (random
    when the text trunk comes from a plain BERT such as the packaged MiniLM), and it does not touch the
    unimodal path that makes ITC text embeddings. Returns the fully frozen sub-modules.
    """
    enc = model.hf.text_encoder
    layers = list(enc.encoder.layer)
    if not 0 <= unlocked_layers <= len(layers):
        raise ConfigError(
            f"must be in [0, {len(layers)}] (the text encoder has {len(layers)} layers), "
            f"got {unlocked_layers}",
            field="model.unlocked_text_layers",
        )
    enc.requires_grad_(False)
    frozen: list[nn.Module] = [enc.embeddings]
    for i, layer in enumerate(layers):
        if i >= len(layers) - unlocked_layers:
            layer.requires_grad_(True)
            continue
        cross = getattr(layer, "crossattention", None)
        if keep_cross_attention and cross is not None:
            cross.requires_grad_(True)
            frozen += [layer.attention, layer.intermediate, layer.output]
        else:
            frozen.append(layer)
    return frozen
