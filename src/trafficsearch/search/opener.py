"""`open_engine`: the one way to open a search engine, for a plain index dir or an ensemble.

- a plain index dir: its model (the manifest's spec, or the model / spec given), its first stage over the
  vector store the manifest names (the FAISS directory by default, or e.g. a Milvus collection);
- an ensemble dir (with ensemble.yaml) or an in-memory `EnsembleConfig`: its members' indexes and models, the
  fused first stage, routing and ITM re-ranking from the config.
Either way every model's fingerprint is checked against its index (index/files.py `check_fingerprint`), and
caches come in through the constructors: `caches(spec)` hands out each model's query-vector cache, so
engines over the same model share encodings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trafficsearch.errors import ConfigError, TrafficSearchError
from trafficsearch.index.files import check_fingerprint
from trafficsearch.index.store import open_index
from trafficsearch.index.stores.factory import open_store
from trafficsearch.models.base import can_rerank
from trafficsearch.models.factory import load_model
from trafficsearch.search.cache import TextCache
from trafficsearch.search.engine import SearchEngine
from trafficsearch.search.ensemble.config import (
    ENSEMBLE_FILE,
    EnsembleConfig,
    is_ensemble_dir,
    load_ensemble,
)
from trafficsearch.search.ensemble.fused import FusedFirstStage
from trafficsearch.search.ensemble.members import Member, open_members
from trafficsearch.search.itm_tokens import attach_stored_tokens
from trafficsearch.search.rerank import ItmRerankStage

Caches = Callable[[str], TextCache]


@dataclass
class Ensemble:
    """What an ensemble engine holds as its `model`: the config and the bound members."""

    config: EnsembleConfig
    members: list[Member]
    models: dict[str, Any]

    @property
    def name(self) -> str:
        return self.config.name


def open_engine(
    source: str | Path | EnsembleConfig,
    model: Any | None = None,
    device: str = "cpu",
    *,
    models: dict[str, Any] | None = None,
    caches: Caches | None = None,
    base_dir: str | Path | None = None,
) -> SearchEngine:
    """A SearchEngine over an index dir, an ensemble dir, or an ensemble config held in memory.

    `model`: for a plain index, a loaded model or a spec that must match the index (default: the
    manifest's spec). `models`: already loaded models by spec (ensembles). `base_dir`: where an in-memory
    config's relative member index paths start (default: the current directory).
    """
    if isinstance(source, EnsembleConfig):
        return open_ensemble(source, Path(base_dir or "."), device, models=models, caches=caches)
    index_dir = Path(source)
    if is_ensemble_dir(index_dir):
        if model is not None:
            raise TrafficSearchError(
                "an ensemble index loads its members' models from ensemble.yaml; do not pass a model",
                path=index_dir,
                field="model",
            )
        config = load_ensemble(index_dir / ENSEMBLE_FILE)
        return open_ensemble(config, index_dir, device, models=models, caches=caches)
    data = open_index(index_dir)
    spec = data.manifest["model_spec"] if model is None else model
    if model is None or isinstance(model, str | Path):
        model = load_model(spec, device=device)
    check_fingerprint(model, data.manifest, index_dir)
    cache = caches(str(data.manifest["model_spec"])) if caches is not None else None
    store = open_store(index_dir, data.manifest) if data.manifest.get("store") else None
    return SearchEngine(data, model, cache=cache, store=store)


def open_ensemble(
    config: EnsembleConfig,
    ensemble_dir: Path,
    device: str = "cpu",
    *,
    models: dict[str, Any] | None = None,
    caches: Caches | None = None,
) -> SearchEngine:
    """The fused engine of `config`; member indexes lie under (or are named relative to) `ensemble_dir`."""
    reference, members, loaded = open_members(ensemble_dir, config, device, models=models, caches=caches)
    first = FusedFirstStage(
        members,
        config.weights,
        config.normalization,
        config.rrf_k,
        config.candidates,
        kind_weights=kind_weight_lists(config),
    )
    rerank = [rerank_stage_for(config, reference, loaded, device)] if config.rerank else []
    attach_stored_tokens(rerank, reference, [m.data for m in members if hasattr(m, "data")])
    return SearchEngine(
        reference,
        Ensemble(config, members, loaded),
        rerank_stages=rerank,
        first_stage=first,
        route=config.route,
        soft_penalty=config.soft_penalty,
    )


def rerank_stage_for(
    config: EnsembleConfig, data: Any, models: dict[str, Any], device: str = "cpu"
) -> ItmRerankStage:
    """The ITM stage of `config.rerank`; its model must have the capability (models/base.py ItmScorer)."""
    r = config.rerank
    assert r is not None
    model = models.get(r.model) or load_model(r.model, device=device)
    if not can_rerank(model):
        raise ConfigError(
            f"rerank model {r.model!r} has no ITM head (use a BLIP checkpoint)", field="rerank.model"
        )
    models[r.model] = model
    return ItmRerankStage(
        model, data, k=r.k, form=r.form, a=r.a, b=r.b, merge=r.merge, batch_size=r.batch_size
    )


def kind_weight_lists(config: EnsembleConfig) -> dict[str, list[float]]:
    by_kind = config.kind_weights or {}
    return {kind: [weights[m.name] for m in config.members] for kind, weights in by_kind.items()}
