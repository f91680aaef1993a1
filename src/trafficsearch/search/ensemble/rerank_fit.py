"""Fitting the ITM re-rank weight on a labelled split, fold-checked against the seed's 1:1.

Why: the seed adds the K candidates' L2-normalised ITM logits to the fused score 1:1. That is only right
when the ITM head orders a top 10 better than fusion does. In the demo (seed 0, 1,000 val queries,
benchmarks/results/rerank_weight.md) the fine-tuned BLIP-small's ITM ordered the fused top 10 worse than a
shuffle (mAP@10 10.85 vs 11.99) and the 1:1 form cost 1.03 points against fusion alone (11.47 vs 12.50).
So, like the fusion weights (folds.py), the weight `b` of the normalised ITM term is searched on a grid on
labelled queries the reported splits never see, and kept only when, on held-out folds, it beats the seed's
`b` by more than the folds' spread and a margin.

One pass of the engine gives every query's staged candidates and ITM outputs; a trial `b` only recombines
them (ItmRerankStage.rescored: the stage's own code), so a grid costs no more ITM forwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trafficsearch.errors import ConfigError
from trafficsearch.eval.metrics import evaluate
from trafficsearch.search.ensemble.folds import fold_check, points_reason
from trafficsearch.search.rerank import ItmRerankStage

GRID = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


@dataclass
class RerankFit:
    """The weight to use (`b`), the seed's (`baseline`), mAP@k of every grid value on the whole split,
    and the held-out check that decided (FoldReport.to_dict; None without folds)."""

    b: float
    baseline: float
    map_by_b: dict[float, float]
    folds: dict[str, Any] | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "b": self.b,
            "baseline_b": self.baseline,
            "map_by_b": {str(b): round(m, 6) for b, m in self.map_by_b.items()},
            "folds": self.folds,
            "reason": self.reason,
        }


def rerank_stage(engine: Any) -> ItmRerankStage:
    """The engine's ITM re-rank stage (the fit needs one, in the `seed` form that `b` weights)."""
    stages = [s for s in engine.rerank_stages if isinstance(s, ItmRerankStage)]
    if len(stages) != 1:
        raise ConfigError("fitting the re-rank weight needs exactly one ITM re-rank stage", field="rerank")
    if stages[0].form != "seed":
        raise ConfigError(
            f"the re-rank weight is fitted for the seed form, not {stages[0].form!r}", field="rerank.form"
        )
    return stages[0]


def fit_rerank_weight(
    engine: Any,
    records: Sequence[Any],
    *,
    grid: Sequence[float] = GRID,
    rule: str = "equal",
    k: int = 10,
    folds: int = 5,
    fold_seed: int = 0,
    fold_margin: float = 0.0,
) -> RerankFit:
    """The re-rank weight `b` fitted on official mAP@k over labelled `records` (the gallery is the index,
    the queries the records' texts). The baseline is the stage's current `b` (the seed's 1.0); with
    `folds` >= 2 the best grid value replaces it only when it wins on held-out folds (folds.fold_check)."""
    stage = rerank_stage(engine)
    baseline = float(stage.b)
    texts = [r.text for r in records]
    unique = list(dict.fromkeys(texts))
    candidates = engine.staged_candidates(unique, max(k, stage.depth))
    outputs = stage.outputs(unique, candidates)
    names = engine.data.metadata.names
    position = {t: i for i, t in enumerate(unique)}
    ranked: dict[float, list[list[str]]] = {}

    def ranking(b: float) -> list[list[str]]:
        if b not in ranked:
            per_text = []
            for cand, out in zip(candidates, outputs, strict=True):
                rows = stage.rescored(cand, out, b).rows[:k]
                per_text.append([names[r] for r in rows.tolist()])
            ranked[b] = per_text
        return ranked[b]

    def score(ids: list[int], b: float) -> float:
        lists = [ranking(b)[position[texts[i]]] for i in ids]
        queries = [records[i] for i in ids]
        return evaluate(queries, records, lists, rule, k).overall.map_official  # type: ignore[arg-type]

    def fit_on(ids: list[int]) -> float:
        """The grid value with the best mAP@k on `ids` (ties: the one nearest the baseline)."""
        return max(grid, key=lambda b: (score(ids, b), -abs(b - baseline)))

    everything = list(range(len(records)))
    map_by_b = {float(b): score(everything, b) for b in sorted({*grid, baseline})}
    if folds >= 2:
        report = fold_check(
            len(records), fit_on, score, baseline, folds=folds, seed=fold_seed, margin=fold_margin
        )
        b = float(fit_on(everything)) if report.keep else baseline
        reason = points_reason(
            report.mean_gain,
            report.spread,
            fold_margin,
            report.keep,
            f"b = {b:g} kept",
            f"the seed's b = {b:g} kept",
        )
        return RerankFit(b, baseline, map_by_b, report.to_dict(), reason)
    b = float(fit_on(everything))
    return RerankFit(b, baseline, map_by_b, None, f"no fold check: b = {b:g} (best on the split)")
