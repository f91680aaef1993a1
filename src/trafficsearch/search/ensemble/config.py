"""Ensemble files: the YAML schema, its validation, and paths relative to the file.

An ensemble file (configs/ensembles/*.yaml):

    name: seed-4
    normalization: l2          # l2 | zscore | minmax | rrf (search/fusion.py)
    rrf_k: 60
    candidates: null           # null: exact over the whole filtered gallery; N: union of members' top-N
    route: off                 # off | hard | soft (search/routing.py)
    soft_penalty: 0.1
    members:
      - {name: clip1, model: /ckpt/clip1, weight: 1.0}      # checkpoint dir or open_clip:<name>:<tag>
      - {name: blip, model: blip:/ckpt/blip, weight: 1.0}   # blip:<checkpoint dir | packaged config>
      - {name: attrs, model: /ckpt/attrs, weight: 0.5, index: /indexes/attrs}  # reuse an existing index
    rerank: {model: blip:/ckpt/blip, k: 10, form: seed, merge: block, a: 1.0, b: 1.0}

Paths (checkpoint dirs, `blip:<dir>`, `index:`) may be relative: they are resolved against the directory of
the file when it is loaded. Saving writes paths inside the file's directory or its parent (the run
directory) relative to the file, so a run directory copied elsewhere (with its checkpoints and indexes)
still opens; other paths stay absolute. Absolute paths are accepted as they are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trafficsearch.errors import ConfigError
from trafficsearch.ioutil import atomic_write_text
from trafficsearch.search import fusion
from trafficsearch.search.rerank import FORMS, MERGES
from trafficsearch.search.routing import DEFAULT_SOFT_PENALTY, ROUTES

ENSEMBLE_FILE = "ensemble.yaml"
MEMBERS_DIR = "members"
BLIP_PREFIX = "blip:"
KINDS = ("vehicle", "pedestrian")


# -- the config file ---------------------------------------------------------------------------------------
@dataclass
class MemberConfig:
    name: str
    model: str
    weight: float = 1.0
    index: str | None = None  # index dir (relative to the ensemble index dir); default members/<name>


@dataclass
class RerankConfig:
    model: str
    k: int = 10
    form: str = "seed"
    merge: str = "block"
    a: float = 1.0
    b: float = 1.0
    batch_size: int = 128  # ITM pairs per forward; 128 was ~2x faster than 32 on 2 CPU cores


@dataclass
class EnsembleConfig:
    name: str
    members: list[MemberConfig]
    normalization: str = "l2"
    rrf_k: int = fusion.RRF_K
    candidates: int | None = None
    route: str = "off"
    soft_penalty: float = DEFAULT_SOFT_PENALTY
    rerank: RerankConfig | None = None
    # per query kind (parsed from the text), weights by member name; other queries use the members' weights
    kind_weights: dict[str, dict[str, float]] | None = None
    fit: dict[str, Any] | None = field(default=None)  # what `ensemble fit` measured

    @property
    def weights(self) -> list[float]:
        return [m.weight for m in self.members]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["members"] = [{k: v for k, v in m.items() if v is not None} for m in d["members"]]
        return {k: v for k, v in d.items() if v is not None or k in ("candidates",)}


def _err(path: Path | None, fld: str, message: str) -> ConfigError:
    return ConfigError(message, path=path, field=fld)


def _number(d: dict[str, Any], key: str, kind: type, default: Any, path: Path | None, prefix: str) -> Any:
    value = d.get(key, default)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and value != int(value))
    ):
        raise _err(
            path, f"{prefix}{key}", f"expected {'an integer' if kind is int else 'a number'}, got {value!r}"
        )
    return kind(value)


def _choice(
    d: dict[str, Any], key: str, choices: Sequence[str], default: str, path: Path | None, prefix: str
) -> str:
    value = d.get(key, default)
    if value is False:  # YAML reads a bare `off` as false
        value = "off"
    if value not in choices:
        raise _err(path, f"{prefix}{key}", f"expected one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _unknown(d: dict[str, Any], allowed: set[str], path: Path | None, prefix: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise _err(path, f"{prefix}{extra[0]}", f"unknown key; expected one of {', '.join(sorted(allowed))}")


def ensemble_from_dict(d: Any, path: Path | None = None) -> EnsembleConfig:
    """Validate a parsed ensemble file; ConfigError names the file and the field (e.g. members[1].weight)."""
    if not isinstance(d, dict):
        raise _err(path, "name", "an ensemble file is a mapping with name and members")
    _unknown(d, {f.name for f in EnsembleConfig.__dataclass_fields__.values()}, path, "")
    members_raw = d.get("members")
    if not isinstance(members_raw, list) or not members_raw:
        raise _err(path, "members", "expected a non-empty list of {name, model, weight}")
    members = []
    for i, m in enumerate(members_raw):
        prefix = f"members[{i}]."
        if not isinstance(m, dict):
            raise _err(path, f"members[{i}]", "expected a mapping with name, model and weight")
        _unknown(m, {"name", "model", "weight", "index"}, path, prefix)
        for key in ("name", "model"):
            if not isinstance(m.get(key), str) or not m[key].strip():
                raise _err(path, f"{prefix}{key}", "expected a non-empty string")
        weight = _number(m, "weight", float, 1.0, path, prefix)
        if weight is None or weight < 0 or not np.isfinite(weight):
            raise _err(path, f"{prefix}weight", f"expected a finite number >= 0, got {m.get('weight')!r}")
        index = m.get("index")
        if index is not None and not isinstance(index, str):
            raise _err(path, f"{prefix}index", "expected a path")
        members.append(MemberConfig(m["name"], m["model"], weight, index))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise _err(path, "members", f"member names must be unique, got {names}")
    if sum(m.weight for m in members) <= 0:
        raise _err(path, "members", "at least one member needs a weight > 0")
    rerank = None
    if d.get("rerank") is not None:
        r = d["rerank"]
        if not isinstance(r, dict) or not isinstance(r.get("model"), str):
            raise _err(path, "rerank.model", "expected a mapping with a BLIP checkpoint in model")
        _unknown(r, {f.name for f in RerankConfig.__dataclass_fields__.values()}, path, "rerank.")
        k = _number(r, "k", int, 10, path, "rerank.")
        if k is None or k < 1:
            raise _err(path, "rerank.k", "expected an integer >= 1")
        rerank = RerankConfig(
            model=r["model"],
            k=k,
            form=_choice(r, "form", FORMS, "seed", path, "rerank."),
            merge=_choice(r, "merge", MERGES, "block", path, "rerank."),
            a=_number(r, "a", float, 1.0, path, "rerank."),
            b=_number(r, "b", float, 1.0, path, "rerank."),
            batch_size=_number(r, "batch_size", int, 128, path, "rerank."),
        )
    kind_weights = _kind_weights(d.get("kind_weights"), names, path)
    name = d.get("name", path.stem if path else "ensemble")
    if not isinstance(name, str):
        raise _err(path, "name", "expected a string")
    candidates = _number(d, "candidates", int, None, path, "")
    if candidates is not None and candidates < 1:
        raise _err(path, "candidates", "expected null (exact) or an integer >= 1")
    rrf_k = _number(d, "rrf_k", int, fusion.RRF_K, path, "")
    return EnsembleConfig(
        name=name,
        members=members,
        normalization=_choice(d, "normalization", fusion.NORMALIZATIONS, "l2", path, ""),
        rrf_k=fusion.RRF_K if rrf_k is None else rrf_k,
        candidates=candidates,
        route=_choice(d, "route", ROUTES, "off", path, ""),
        soft_penalty=_number(d, "soft_penalty", float, DEFAULT_SOFT_PENALTY, path, ""),
        rerank=rerank,
        kind_weights=kind_weights,
        fit=d.get("fit"),
    )


def _kind_weights(raw: Any, names: list[str], path: Path | None) -> dict[str, dict[str, float]] | None:
    """kind_weights: {vehicle|pedestrian: {member name: weight, ...}}, every member named, not all zero."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _err(path, "kind_weights", "expected a mapping {vehicle: {member: weight}, pedestrian: ...}")
    out: dict[str, dict[str, float]] = {}
    for kind, weights in raw.items():
        prefix = f"kind_weights.{kind}"
        if kind not in KINDS:
            raise _err(path, prefix, f"unknown kind; expected one of {', '.join(KINDS)}")
        if not isinstance(weights, dict) or set(weights) != set(names):
            raise _err(path, prefix, f"expected a weight for every member: {', '.join(names)}")
        values = {}
        for name in names:
            w = weights[name]
            if isinstance(w, bool) or not isinstance(w, int | float) or not np.isfinite(w) or w < 0:
                raise _err(path, f"{prefix}.{name}", f"expected a finite number >= 0, got {w!r}")
            values[name] = float(w)
        if sum(values.values()) <= 0:
            raise _err(path, prefix, "at least one member needs a weight > 0")
        out[kind] = values
    return out


def load_ensemble(path: str | Path) -> EnsembleConfig:
    path = Path(path)
    if path.is_dir():
        path = path / ENSEMBLE_FILE
    if not path.is_file():
        raise ConfigError("ensemble file not found", path=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            "invalid YAML: " + " ".join(str(getattr(exc, "problem", None) or exc).split()),
            path=path,
            line=mark.line + 1 if mark else None,
        ) from None
    return resolve_paths(ensemble_from_dict(data, path), path.parent)


def save_ensemble(config: EnsembleConfig, path: str | Path) -> None:
    """Write atomically, with paths relative to the file's directory (comments are not kept)."""
    path = Path(path)
    relative = map_paths(config, lambda p: _relative(p, path.parent))
    text = yaml.safe_dump(relative.to_dict(), sort_keys=False, allow_unicode=True)
    atomic_write_text(path, text)


def _relative(p: str, base: Path) -> str:
    """An existing absolute path inside the file's directory or its parent (the run directory) relative to
    the file's directory; anything else as given (a path elsewhere stays absolute: it works from any copy)."""
    if not Path(p).is_absolute() or not Path(p).exists():
        return p
    rel = os.path.relpath(p, os.path.abspath(base))
    return p if rel.startswith(os.path.join("..", "..")) or rel == os.path.join("..", "..") else rel


def _resolve(p: str, base: Path) -> str:
    """`p` against `base` when that names something (else as given: a spec or a cwd-relative legacy path)."""
    if Path(p).is_absolute():
        return p
    candidate = base / p
    return str(candidate.resolve()) if candidate.exists() else p


def map_paths(config: EnsembleConfig, fn: Any) -> EnsembleConfig:
    """A copy with `fn(path)` applied to every path in it: member checkpoint dirs (also after `blip:`),
    member `index:` dirs and the re-ranker's checkpoint. Specs that are not paths pass through unchanged."""

    def spec(s: str) -> str:
        prefix = BLIP_PREFIX if s.startswith(BLIP_PREFIX) else ""
        rest = s[len(prefix) :]
        if ":" in rest and not Path(rest).exists():  # open_clip:<name>:<tag> and other non-path specs
            return s
        return prefix + fn(rest)

    members = [
        MemberConfig(m.name, spec(m.model), m.weight, None if m.index is None else fn(m.index))
        for m in config.members
    ]
    rerank = None
    if config.rerank:
        rerank = RerankConfig(**{**asdict(config.rerank), "model": spec(config.rerank.model)})
    return EnsembleConfig(**{**config.__dict__, "members": members, "rerank": rerank})


def resolve_paths(config: EnsembleConfig, base: str | Path) -> EnsembleConfig:
    """Relative paths that exist under `base` become absolute (what every opener works with)."""
    return map_paths(config, lambda p: _resolve(p, Path(base)))


def is_ensemble_dir(path: str | Path) -> bool:
    return (Path(path) / ENSEMBLE_FILE).is_file()


def member_index_dir(ensemble_dir: str | Path, member: MemberConfig) -> Path:
    """The member's `index:` (absolute, or relative to the ensemble dir), else ENSEMBLE_DIR/members/<name>."""
    base = Path(ensemble_dir)
    return base / member.index if member.index else base / MEMBERS_DIR / member.name


def with_weights(
    config: EnsembleConfig,
    weights: Sequence[float],
    fit: dict[str, Any],
    kind_weights: dict[str, Sequence[float]] | None = None,
) -> EnsembleConfig:
    """A copy with new member weights (and per-kind weights, as lists in member order) and the fit record."""
    members = [
        MemberConfig(m.name, m.model, float(w), m.index) for m, w in zip(config.members, weights, strict=True)
    ]
    by_kind = None
    if kind_weights:
        by_kind = {
            kind: {m.name: float(x) for m, x in zip(config.members, w, strict=True)}
            for kind, w in kind_weights.items()
        }
    return EnsembleConfig(**{**config.__dict__, "members": members, "fit": fit, "kind_weights": by_kind})


def with_rerank_weight(config: EnsembleConfig, b: float) -> EnsembleConfig:
    """A copy whose ITM re-rank stage weights the normalised logits by `b` (seed form; rerank_fit.py)."""
    if config.rerank is None:
        raise ConfigError("the ensemble has no rerank section to set the weight of", field="rerank")
    return replace(config, rerank=replace(config.rerank, b=float(b)))
