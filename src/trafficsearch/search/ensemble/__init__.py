"""Ensembles as config: several models indexed once each, fused per query, optionally ITM re-ranked.

One module per job:
- config.py  the ensemble file (YAML schema, validation, paths relative to the file);
- members.py row scorers over the reference gallery (`EmbeddingMember`: one model's index) and opening them;
- fused.py   the fused first stage (normalise, weight per query kind, sum, top-`depth`);
- build.py   `build_ensemble_index`: every member's index over one gallery, then ensemble.yaml;
- fit.py     `fit_weights`: member weights fitted on a labelled split, ranked through the engine.

An ensemble index dir holds `ensemble.yaml` (its presence marks the dir as an ensemble and as complete) and
one ordinary index dir per member under `members/<name>/` (or the member's `index:` path). search/opener.py
`open_engine` opens it (or an in-memory config) like a plain index, so search, submit, evaluate and the
service take an ensemble wherever they take a model.
"""

from trafficsearch.search.ensemble.build import build_ensemble_index
from trafficsearch.search.ensemble.config import (
    BLIP_PREFIX,
    ENSEMBLE_FILE,
    KINDS,
    MEMBERS_DIR,
    EnsembleConfig,
    MemberConfig,
    RerankConfig,
    ensemble_from_dict,
    is_ensemble_dir,
    load_ensemble,
    member_index_dir,
    resolve_paths,
    save_ensemble,
    with_rerank_weight,
    with_weights,
)
from trafficsearch.search.ensemble.fit import FitResult, fit_weights
from trafficsearch.search.ensemble.fused import FusedFirstStage
from trafficsearch.search.ensemble.members import EmbeddingMember, Member, open_members

__all__ = [
    "BLIP_PREFIX",
    "ENSEMBLE_FILE",
    "KINDS",
    "MEMBERS_DIR",
    "EmbeddingMember",
    "EnsembleConfig",
    "FitResult",
    "FusedFirstStage",
    "Member",
    "MemberConfig",
    "RerankConfig",
    "build_ensemble_index",
    "ensemble_from_dict",
    "fit_weights",
    "is_ensemble_dir",
    "load_ensemble",
    "member_index_dir",
    "open_members",
    "resolve_paths",
    "save_ensemble",
    "with_rerank_weight",
    "with_weights",
]
