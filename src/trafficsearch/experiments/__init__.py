"""Experiments: whole systems trained, indexed and scored (systems.py), the demo built on them
(demo.py, its tables in tables.py) and the demo over several seeds (seeds.py).

The public API below is what benchmarks and the CLI use; nothing outside this package reaches into it.
This layer sits above search (design.md: cli > serve > experiments > search > ...).
"""

from trafficsearch.experiments.demo import (
    FULL_SYSTEM,
    DemoPlan,
    DemoResult,
    compare_with_best_single,
    demo_console,
    fit_summary,
    fit_weights_on_dev,
    load_results,
    prepare_data,
    run_demo,
)
from trafficsearch.experiments.seeds import (
    difference_lines,
    load_spread,
    plan_differences,
    run_seeds,
    spread_path,
    summarise_seeds,
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
from trafficsearch.experiments.tables import contain_table, results_table, spread_table

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
    "contain_table",
    "demo_console",
    "difference_lines",
    "evenly",
    "fit_fusion",
    "fit_summary",
    "fit_weights_on_dev",
    "index_member",
    "latency_texts",
    "load_results",
    "load_spread",
    "load_split_data",
    "open_fused",
    "open_single",
    "plan_differences",
    "prepare_data",
    "query_latency_ms",
    "reranker_of",
    "results_table",
    "run_demo",
    "run_seeds",
    "score_ranking",
    "score_system",
    "spread_path",
    "spread_table",
    "summarise_seeds",
    "train_attribute_member",
    "train_member",
]
