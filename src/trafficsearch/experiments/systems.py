"""Train, index and score whole retrieval systems on a prepared competition-layout root.

The demo and benchmarks/ablation.py share this so their rows mean the same thing: each member is trained once
(resuming), indexed once per split, ensembles are assembled from a config over those indexes (nothing is
encoded twice; one ModelCache hands every engine its models and query-vector caches), and every system is
scored by `score_system`: official metrics under both relevance rules plus a cold single-query latency.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from trafficsearch.data.labels import read_labels
from trafficsearch.data.layout import split
from trafficsearch.data.records import Record
from trafficsearch.models.base import can_rerank
from trafficsearch.models.factory import load_model
from trafficsearch.search.cache import TextCache, encode_queries
from trafficsearch.search.ensemble import (
    ENSEMBLE_FILE,
    EnsembleConfig,
    MemberConfig,
    RerankConfig,
    fit_weights,
    save_ensemble,
)
from trafficsearch.search.opener import open_engine

RULES = ("equal", "contain")
T = TypeVar("T")


@dataclass(frozen=True)
class SplitData:
    """A labelled gallery: its records' images are the gallery, their texts the queries.

    `queries`, when set, is the subset of records whose texts are searched (every system over the same ones);
    the gallery stays whole, so the metric is the full split's, estimated on fewer queries.
    """

    name: str
    records: list[Record]
    images: Path
    labels: Path
    queries: list[Record] | None = None

    @property
    def query_records(self) -> list[Record]:
        return self.records if self.queries is None else self.queries


def evenly(items: Sequence[T], n: int | None) -> list[T]:
    """`n` items spread evenly over `items` in their order (all of them when n is None or too large)."""
    if n is None or n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def load_split_data(root: str | Path, name: str, n_queries: int | None = None) -> SplitData:
    """A split of a competition-layout root; `n_queries` evenly spread records as queries (None: all)."""
    if n_queries is not None and n_queries < 1:
        raise ValueError(f"n_queries must be at least 1 (None: every record), got {n_queries}")
    sp = split(Path(root), name)
    records = read_labels(sp.labels).records
    queries = evenly(records, n_queries) if n_queries is not None and n_queries < len(records) else None
    return SplitData(name, records, sp.images, sp.labels, queries)


# -- members -------------------------------------------------------------------------------------------------
def train_member(
    config: str,
    root: str | Path,
    out: str | Path,
    overrides: Sequence[str] = (),
    seed: int = 0,
    show_progress: bool = True,
) -> Path:
    """Train (or resume) a CLIP or BLIP member from a config name/path; returns its best checkpoint dir."""
    from trafficsearch.train.config import load_config
    from trafficsearch.train.loop import train

    out = Path(out)
    cfg = load_config(
        config, [f"data.root={root}", f"train.output_dir={out}", f"train.seed={seed}", *overrides]
    )
    result = train(cfg, out, resume=(out / "last").is_dir(), show_progress=show_progress)
    best = result.run_dir / "best"
    return best if best.is_dir() else result.run_dir / "last"


def train_attribute_member(
    root: str | Path,
    out: str | Path,
    *,
    epochs: int = 6,
    seed: int = 0,
    limit: int | None = None,
    workers: int = 2,
    show_progress: bool = True,
) -> Path:
    """Train (or resume) the attribute-recognition baseline; returns its checkpoint dir."""
    from trafficsearch.train.attributes import AttributeTrainConfig, train_attributes

    cfg = AttributeTrainConfig(
        root=str(root), out=str(out), epochs=epochs, seed=seed, limit=limit, workers=workers
    )
    return train_attributes(cfg, progress=show_progress)


class ModelCache:
    """Loaded models by checkpoint path, each with one query-vector cache: a member is loaded once, and each
    query text encoded once per model, however many systems (single, fused, re-ranked) use it."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.models: dict[str, Any] = {}
        self.text_caches: dict[str, Any] = {}

    def get(self, checkpoint: str | Path) -> Any:
        key = str(Path(checkpoint).resolve())
        if key not in self.models:
            self.models[key] = load_model(key, device=self.device)
        return self.models[key]

    def text_cache(self, checkpoint: str | Path) -> TextCache:
        """The query-vector cache of a checkpoint's model (what `open_engine(caches=...)` hands out)."""
        key = str(Path(checkpoint).resolve())
        if key not in self.text_caches:
            self.text_caches[key] = TextCache(partial(encode_queries, self.get(checkpoint)))
        return self.text_caches[key]


def index_member(
    checkpoint: str | Path,
    data: SplitData,
    out: str | Path,
    models: ModelCache,
    *,
    workers: int = 2,
    progress: bool = True,
    itm_tokens: bool = True,
) -> Path:
    """Index `data`'s gallery with one member (resumes finished shards); returns the index dir.

    With `itm_tokens`, a member that can re-rank (an ITM head) also stores its ITM image tokens with the
    index (index/itm_tokens.py), so re-ranking reads the candidates' tokens instead of decoding and
    encoding them per query; a split that is never re-ranked (the fit's dev split) can skip them.
    """
    from trafficsearch.index.build import build_index
    from trafficsearch.index.itm_tokens import has_itm_tokens, write_itm_tokens

    checkpoint = Path(checkpoint).resolve()
    model = models.get(checkpoint)
    build_index(
        data.images,
        out,
        model,
        model_spec=checkpoint,
        labels=data.labels,
        workers=workers,
        progress=progress,
    )
    if itm_tokens and can_rerank(model) and hasattr(model, "itm_image_tokens"):
        if not has_itm_tokens(out, model):  # a rerun finds them written
            write_itm_tokens(out, model, progress=progress)
    return Path(out)


# -- systems -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemberIndex:
    """One member of a system: its checkpoint and its index over the split being searched."""

    name: str
    checkpoint: Path
    index: Path
    weight: float = 1.0


def open_single(member: MemberIndex, models: ModelCache) -> Any:
    return open_engine(member.index, model=models.get(member.checkpoint), caches=models.text_cache)


def open_fused(
    out: str | Path,
    members: Sequence[MemberIndex],
    models: ModelCache,
    *,
    normalization: str = "zscore",
    route: str = "off",
    rerank: str | Path | None = None,
    rerank_k: int = 10,
    rerank_form: str = "seed",
    rerank_b: float = 1.0,
    kind_weights: dict[str, Sequence[float]] | None = None,
) -> Any:
    """An ensemble engine over existing member indexes, opened from its config in memory; OUT/ensemble.yaml
    records it (paths relative to OUT), so `trafficsearch search OUT ...` opens the same system.

    `rerank` is a checkpoint whose ITM head re-scores the fused top `rerank_k` (when searched with
    rerank=True); `rerank_b` weights its normalised logits in the seed form (the seed: 1.0).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = EnsembleConfig(
        name=out.name,
        members=[
            MemberConfig(
                m.name, str(Path(m.checkpoint).resolve()), float(m.weight), str(Path(m.index).resolve())
            )
            for m in members
        ],
        normalization=normalization,
        route=route,
        kind_weights=(
            {k: {m.name: float(x) for m, x in zip(members, w, strict=True)} for k, w in kind_weights.items()}
            if kind_weights
            else None
        ),
        rerank=(
            None
            if rerank is None
            else RerankConfig(str(Path(rerank).resolve()), k=rerank_k, form=rerank_form, b=rerank_b)
        ),
    )
    save_ensemble(config, out / ENSEMBLE_FILE)
    loaded = {str(Path(m.checkpoint).resolve()): models.get(m.checkpoint) for m in members}
    if rerank is not None:
        loaded[str(Path(rerank).resolve())] = models.get(rerank)
    return open_engine(config, models=loaded, caches=models.text_cache, base_dir=out)


def fit_fusion(
    out: str | Path,
    members: Sequence[MemberIndex],
    models: ModelCache,
    dev: SplitData,
    *,
    normalization: str = "zscore",
    grid: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0),
    by_kind: bool = True,
    min_gain: float = 0.0,
    regularise: float = 0.0,
    folds: int = 0,
    fold_margin: float = 0.0,
    seed: int = 0,
) -> Any:
    """Fusion weights fitted on a held-out split (`members` indexed over `dev`): an ensemble FitResult.

    `regularise`, `folds`, `fold_margin`: the guards of search/ensemble/folds.py (a pull toward equal
    weights; fitted weights kept only when they beat equal ones on held-out folds by more than the folds'
    spread and the margin, else equal weights); `seed` shuffles the folds.
    """
    engine = open_fused(out, members, models, normalization=normalization)
    return fit_weights(
        engine,
        dev.records,
        grid=grid,
        rounds=2,
        by_kind=by_kind,
        min_gain=min_gain,
        regularise=regularise,
        folds=folds,
        fold_margin=fold_margin,
        fold_seed=seed,
    )


def fit_rerank(
    out: str | Path,
    members: Sequence[MemberIndex],
    models: ModelCache,
    dev: SplitData,
    rerank: str | Path,
    *,
    normalization: str = "zscore",
    rerank_k: int = 10,
    kind_weights: dict[str, Sequence[float]] | None = None,
    folds: int = 5,
    fold_margin: float = 0.0,
    seed: int = 0,
) -> Any:
    """The seed-form re-rank weight fitted on a held-out split (`members` indexed over `dev`, with their
    fitted fusion weights): a rerank_fit.RerankFit, the seed's 1:1 unless another weight wins on the folds."""
    from trafficsearch.search.ensemble.rerank_fit import fit_rerank_weight

    engine = open_fused(
        out,
        members,
        models,
        normalization=normalization,
        rerank=rerank,
        rerank_k=rerank_k,
        kind_weights=kind_weights,
    )
    return fit_rerank_weight(engine, dev.records, k=10, folds=folds, fold_seed=seed, fold_margin=fold_margin)


@contextmanager
def cold_caches(engine: Any) -> Iterator[None]:
    """Inside: every cache the engine reads (query vectors, candidate pixels/tokens) starts empty, so a search
    pays its full cost; after: what was cached before is back. The query-vector caches are shared by every
    system of a model (ModelCache): emptying them for good made the next system re-encode every text."""
    with ExitStack() as stack:
        for cache in engine.caches():
            stack.enter_context(cache.cold())
        yield


def query_latency_ms(
    engine: Any, texts: Sequence[str], *, rerank: bool = False, route: str | None = None
) -> dict[str, float]:
    """Cold single-query latency (text encoding + search + re-ranking): p50 and mean over `texts` in ms."""
    times = []
    for text in texts:
        with cold_caches(engine):
            start = time.perf_counter()
            engine.search([text], k=10, rerank=rerank, route=route)
            times.append((time.perf_counter() - start) * 1000.0)
    return {"p50": float(np.median(times)), "mean": float(np.mean(times))} if times else {}


def latency_texts(data: SplitData, n: int) -> list[str]:
    """`n` distinct query texts spread evenly over the split (fixed, so every system times the same ones)."""
    return evenly(list(dict.fromkeys(r.text for r in data.query_records)), n)


def score_ranking(
    system: str, data: SplitData, ranked: Sequence[Sequence[str]], extra: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One row per relevance rule: the split's query records judged against a ranked name list per query."""
    from trafficsearch.eval.metrics import evaluate

    rows = []
    for rule in RULES:
        result = evaluate(data.query_records, data.records, ranked, rule=rule)
        rows.append({"split": data.name, "system": system, "rule": rule, **result.to_dict(), **(extra or {})})
    return rows


def score_system(
    system: str,
    engine: Any,
    data: SplitData,
    *,
    rerank: bool = False,
    route: str | None = None,
    latency_queries: int = 0,
) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """(rows for both rules, hits): every query record's text searched over the split's whole gallery.

    With `latency_queries` > 0 the rows carry `latency_ms` (cold single queries, measured first).
    """
    extra: dict[str, Any] = {}
    if latency_queries:
        extra["latency_ms"] = query_latency_ms(
            engine, latency_texts(data, latency_queries), rerank=rerank, route=route
        )
    start = time.perf_counter()
    hits = engine.search([r.text for r in data.query_records], k=10, rerank=rerank, route=route)
    extra["search_s"] = round(time.perf_counter() - start, 2)
    ranked = [[h.name for h in row] for row in hits]
    return score_ranking(system, data, ranked, extra), hits


def reranker_of(members: Sequence[MemberIndex], models: ModelCache) -> Path | None:
    """The checkpoint of the first member whose model can re-rank (has an ITM head), if any."""
    return next((m.checkpoint for m in members if can_rerank(models.get(m.checkpoint))), None)
