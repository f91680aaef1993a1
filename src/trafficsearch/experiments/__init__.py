"""Experiments: whole systems trained, indexed and scored (systems.py), and the demo built on them (demo.py).

The public API below is what benchmarks and the CLI use; nothing outside this package reaches into it.
This layer sits above search (design.md: cli > serve > experiments > search > ...).
"""

from trafficsearch.experiments.demo import (
    FULL_SYSTEM,
    DemoPlan,
    DemoResult,
    compare_with_best_single,
    load_results,
    prepare_data,
    run_demo,
)
from trafficsearch.experiments.systems import (
    RULES,
    MemberIndex,
    ModelCache,
    SplitData,
    cold_caches,
    evenly,
    fit_fusion,
    index_member,
    latency_texts,
    load_split_data,
    open_fused,
    open_single,
    query_latency_ms,
    reranker_of,
    score_ranking,
    score_system,
    train_attribute_member,
    train_member,
)

__all__ = [
    "FULL_SYSTEM",
    "RULES",
    "DemoPlan",
    "DemoResult",
    "MemberIndex",
    "ModelCache",
    "SplitData",
    "cold_caches",
    "compare_with_best_single",
    "evenly",
    "fit_fusion",
    "index_member",
    "latency_texts",
    "load_results",
    "load_split_data",
    "open_fused",
    "open_single",
    "prepare_data",
    "query_latency_ms",
    "reranker_of",
    "run_demo",
    "score_ranking",
    "score_system",
    "train_attribute_member",
    "train_member",
]
