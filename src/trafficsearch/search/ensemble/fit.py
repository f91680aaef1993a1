"""Fitting an ensemble's member weights on a labelled split, ranking through the engine itself."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trafficsearch.eval.metrics import evaluate
from trafficsearch.search.ensemble.config import KINDS
from trafficsearch.search.ensemble.folds import fold_check, regularised
from trafficsearch.search.ensemble.fused import FusedFirstStage
from trafficsearch.search.routing import query_kind

# One weight assignment: the weights for every query, and optionally per query kind.
Assignment = tuple[list[float], dict[str, list[float]] | None]


@dataclass
class FitResult:
    weights: list[float]
    map_official: float
    baseline: float  # mAP@10 of the starting weights
    per_member: dict[str, float]  # each member alone
    trials: int
    kind_weights: dict[str, list[float]] | None = None  # with by_kind: the weights fitted per query kind
    folds: dict[str, Any] | None = None  # with folds: the held-out check (FoldReport.to_dict) that decided
    equal_map: float | None = None  # with folds: mAP@k of equal weights on the whole split


def _coordinate_search(
    score: Callable[[Sequence[float]], float],
    start: Sequence[float],
    grid: Sequence[float],
    rounds: int,
    min_gain: float = 0.0,
) -> tuple[list[float], float, int]:
    """Greedy coordinate search over `grid` per weight; (best weights, best score, trials).

    A trial replaces the current weights only when it beats them by more than `min_gain`: on a small fit split
    the last few hundredths of mAP are noise, and chasing them picks weights that do not transfer."""
    weights = list(start)
    best, trials = score(weights), 1
    for _ in range(rounds):
        improved = False
        for i in range(len(weights)):
            for value in grid:
                trial = list(weights)
                trial[i] = float(value)
                if trial == weights or sum(trial) <= 0:
                    continue
                trials += 1
                result = score(trial)
                if result > best + max(min_gain, 1e-9):
                    best, weights, improved = result, trial, True
        if not improved:
            break
    return weights, best, trials


def fit_weights(
    engine: Any,
    records: Sequence[Any],
    *,
    grid: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
    rounds: int = 3,
    rule: str = "equal",
    k: int = 10,
    by_kind: bool = False,
    min_gain: float = 0.0,
    regularise: float = 0.0,
    folds: int = 0,
    fold_margin: float = 0.0,
    fold_seed: int = 0,
) -> FitResult:
    """Coordinate search of member weights on official mAP@k (eval/metrics.evaluate) over labelled records.

    `min_gain` (mAP, 0-1): the least gain a weight change must bring to be kept (see _coordinate_search).

    The gallery is the index; the queries are the records' texts (val_label.txt gives both). Every trial
    ranks through `engine.search` itself (routing, per-kind weights, the fused first stage), with the trial's
    weights in a copy of the fused stage: the fitted score is the score the engine then gets. The copies
    share each member's normalised rows, so a trial costs a weighted sum and a top-k. `by_kind`: fit one
    weight set per query kind (parsed from the text, as the engine applies them) on that kind's queries.

    Against weights that do not transfer (search/ensemble/folds.py): `regularise` (mAP per unit of L1
    distance between the weight shares and equal shares) is subtracted from every trial's score; `folds`
    >= 2 cross-validates the whole fit on the records and keeps the fitted weights only when their mean
    held-out gain over equal weights beats the folds' spread and `fold_margin`, else returns equal weights.
    """
    first: FusedFirstStage = engine.first_stage
    texts = [r.text for r in records]
    memo: dict[Any, Any] = {}

    def ranked_by(
        weights: Sequence[float], kind_weights: dict[str, Sequence[float]] | None, subset: list[str]
    ) -> dict[str, list[str]]:
        trial = engine.with_first_stage(first.reweighted(weights, kind_weights, memo))
        hits = trial.search(subset, k=k)
        return {t: [h.name for h in row] for t, row in zip(subset, hits, strict=True)}

    def scorer(
        query_ids: list[int], kind: str | None = None, base: Sequence[float] | None = None
    ) -> Callable[[Sequence[float]], float]:
        """official mAP@k over the records `query_ids` for one weight set (of `kind`, when given)."""
        subset = list(dict.fromkeys(texts[i] for i in query_ids))
        queries = [records[i] for i in query_ids]

        def score(weights: Sequence[float]) -> float:
            if kind is None:
                ranked = ranked_by(weights, None, subset)
            else:
                ranked = ranked_by(base or weights, {kind: weights}, subset)
            lists = [ranked[texts[i]] for i in query_ids]
            return evaluate(queries, records, lists, rule, k).overall.map_official  # type: ignore[arg-type]

        return score

    everyone = scorer(list(range(len(records))))
    start = [float(w) for w in first.weights]
    baseline = everyone(start)
    per_member = {}
    for i, m in enumerate(first.members):
        solo = [0.0] * len(start)
        solo[i] = 1.0
        per_member[m.name] = everyone(solo)
    equal = [1.0] * len(start)
    trials = len(start) + 1

    def fit_on(ids: list[int]) -> Assignment:
        """Coordinate search on the records `ids` (one set, then per kind), regularised toward equal."""
        nonlocal trials
        score = regularised(scorer(ids), regularise)
        weights, _, n = _coordinate_search(score, start, grid, rounds, min_gain)
        trials += n
        if not by_kind:
            return weights, None
        per_kind: dict[str, list[float]] = {}
        for kind in KINDS:
            of_kind = [i for i in ids if query_kind(texts[i]) == kind]
            if of_kind:
                per_kind[kind], _, n = _coordinate_search(
                    regularised(scorer(of_kind, kind, weights), regularise), weights, grid, rounds, min_gain
                )
                trials += n
        return weights, per_kind

    def score_on(ids: list[int], assignment: Assignment) -> float:
        weights, per_kind = assignment
        subset = list(dict.fromkeys(texts[i] for i in ids))
        ranked = ranked_by(weights, per_kind, subset)
        queries = [records[i] for i in ids]
        lists = [ranked[texts[i]] for i in ids]
        return evaluate(queries, records, lists, rule, k).overall.map_official  # type: ignore[arg-type]

    everything = list(range(len(records)))
    report = None
    if folds:
        report = fold_check(
            len(records), fit_on, score_on, (equal, None), folds=folds, seed=fold_seed, margin=fold_margin
        )
    if report is not None and not report.keep:
        weights, kind_weights = equal, None
    else:
        weights, kind_weights = fit_on(everything)
    return FitResult(
        weights,
        score_on(everything, (weights, kind_weights)),
        baseline,
        per_member,
        trials,
        kind_weights,
        folds=report.to_dict() if report is not None else None,
        equal_map=everyone(equal) if report is not None else None,
    )
