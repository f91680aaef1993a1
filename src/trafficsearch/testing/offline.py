"""open_clip models with random weights built offline: the seed recipe's architectures, no download."""

from __future__ import annotations

import json
from pathlib import Path

# XLM-R large as open_clip's xlm-roberta-large-ViT-H-14 expects it (transformers' XLMRobertaConfig values),
# so the architecture builds offline; the hub config/tokenizer are only needed with real weights.
XLM_ROBERTA_LARGE = {
    "model_type": "xlm-roberta",
    "architectures": ["XLMRobertaForMaskedLM"],
    "vocab_size": 250002,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "hidden_act": "gelu",
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-05,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}


def offline_clip(name: str, cache_dir: Path, transform: str = "pad"):  # noqa: ANN201 - OpenClipModel
    """open_clip `name` with random weights and no download: an HF text tower is built from a local config
    (`hf_model_pretrained: false`) and tokenised by the packaged MiniLM BERT tokenizer as a stand-in
    (ids stay inside XLM-R's vocabulary; real training uses the model's own sentencepiece tokenizer)."""
    from trafficsearch.models import registry
    from trafficsearch.models.clip import build_from_config, create_clip

    cfg = json.loads(json.dumps(registry.get_model_config(name)))
    text = cfg.get("text_cfg", {})
    if not text.get("hf_model_name"):
        return create_clip(name, None, transform=transform)
    if "xlm-roberta" not in text["hf_model_name"]:
        raise ValueError(f"no offline config for {text['hf_model_name']}")
    local = Path(cache_dir) / "xlm-roberta-large"
    local.mkdir(parents=True, exist_ok=True)
    (local / "config.json").write_text(json.dumps(XLM_ROBERTA_LARGE), encoding="utf-8")
    text.update(
        hf_model_name=str(local), hf_model_pretrained=False, hf_tokenizer_name=str(registry.minilm_dir())
    )
    return build_from_config(name, cfg, load_text_pretrained=False, transform=transform)
