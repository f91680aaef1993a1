"""Ensembles as config: several models indexed once each, fused per query, optionally ITM re-ranked.

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

An ensemble index dir holds `ensemble.yaml` (the resolved file; its presence marks the dir as an ensemble and
as complete) and one ordinary index dir per member under `members/<name>/` (or the member's `index:` path,
relative to the ensemble dir). `SearchEngine.open` recognises such a dir, so search, submit, evaluate and the
service take an ensemble wherever they take a model.

Members are row scorers (`Member`): an embedding index (`EmbeddingMember`) or anything that returns a score
row per query over the gallery (e.g. a stub, a caption matcher). The attribute baseline is an embedding
member (its image vector holds log-probabilities, its text vector selects the stated ones).
All members must index the same images (any order; rows are aligned by gallery path).

Large galleries: `candidates: N` scores only the union of each member's FAISS top-N. l2 and zscore stay
exact there (row norm and mean come from a D x D Gram matrix, `fusion.gram_stats`); minmax takes min/max over
the union and rrf ranks beyond a member's top-N as N+1 (approximations).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trafficsearch.errors import ConfigError, IndexError_, TrafficSearchError
from trafficsearch.index.itm_tokens import has_itm_tokens, write_itm_tokens
from trafficsearch.ioutil import atomic_write_text
from trafficsearch.search import fusion
from trafficsearch.search.cache import TextCache, encode_queries
from trafficsearch.search.itm_tokens import attach_stored_tokens
from trafficsearch.search.rerank import FORMS, MERGES
from trafficsearch.search.routing import DEFAULT_SOFT_PENALTY, ROUTES, query_kind
from trafficsearch.search.stages import Candidates

ENSEMBLE_FILE = "ensemble.yaml"
MEMBERS_DIR = "members"
BLIP_PREFIX = "blip:"
_BLOCK = 32_768  # gallery rows per matmul block
_FLOAT32_COPY_MAX = 32_000_000  # vector elements (128 MB in float32) a member keeps a float32 copy of
_QUERY_CHUNK = 256
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
    return ensemble_from_dict(data, path)


def save_ensemble(config: EnsembleConfig, path: str | Path) -> None:
    """Write atomically (comments of a hand-written file are not kept)."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
    atomic_write_text(path, text)


def is_ensemble_dir(path: str | Path) -> bool:
    return (Path(path) / ENSEMBLE_FILE).is_file()


def member_index_dir(ensemble_dir: str | Path, member: MemberConfig) -> Path:
    base = Path(ensemble_dir)
    return base / member.index if member.index else base / MEMBERS_DIR / member.name


# -- models ------------------------------------------------------------------------------------------------
def load_member_model(spec: str, device: str = "cpu") -> Any:
    """A checkpoint dir (by model.json family: open_clip, blip, attributes), blip:<spec>, open_clip:<..>."""
    if spec.startswith(BLIP_PREFIX):
        from trafficsearch.models.blip import create_blip

        return create_blip(spec[len(BLIP_PREFIX) :], device=device)
    model_json = Path(spec) / "model.json"
    if model_json.is_file():
        try:
            family = json.loads(model_json.read_text(encoding="utf-8")).get("family")
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid JSON: {exc.msg}", path=model_json, line=exc.lineno) from None
        if family == "blip":
            from trafficsearch.models.blip import load_blip

            return load_blip(spec, device=device)
        if family == "attributes":
            from trafficsearch.models.attributes import load_attribute_model

            return load_attribute_model(spec, device=device)
    from trafficsearch.index.build import load_model_spec

    return load_model_spec(spec, device=device)


# -- members -------------------------------------------------------------------------------------------------
class Member:
    """A row scorer: scores(texts, rows) -> [Q, len(rows)] over the reference gallery rows (all when None)."""

    name: str = "member"

    def bind(self, reference: Any) -> None:
        """Called once with the ensemble's reference IndexData (row order of every score row)."""

    def scores(self, texts: Sequence[str], rows: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def top(self, texts: Sequence[str], n: int, rows: np.ndarray | None) -> list[np.ndarray]:
        """Reference rows of each query's top n (default: from the full row)."""
        scores = self.scores(texts, rows)
        n = min(n, scores.shape[1])
        part = np.argpartition(-scores, n - 1, axis=1)[:, :n] if n else np.zeros((len(texts), 0), int)
        return [part[i] if rows is None else rows[part[i]] for i in range(len(texts))]

    def stats(self, texts: Sequence[str], rows: np.ndarray | None) -> fusion.RowStats | None:
        """Exact l2/zscore statistics of the full rows, when cheaper than scoring them (else None)."""
        return None

    def scores_at(self, texts: Sequence[str], rows_per_query: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Scores of each query on its own candidate rows (default: from the full row)."""
        full = self.scores(texts, None)
        return [full[i, r] for i, r in enumerate(rows_per_query)]


class EmbeddingMember(Member):
    """A model's index: text vectors (cached) dot the image vectors, aligned to the reference row order."""

    def __init__(self, name: str, data: Any, model: Any, cache_size: int = 100_000) -> None:
        self.name, self.data, self.model = name, data, model
        self.cache = TextCache(self._encode, capacity=cache_size)
        self._vectors: np.ndarray | None = None
        self._vectors32: np.ndarray | None = None
        self._perm: np.ndarray | None = None
        self._gram: dict[bytes, tuple[np.ndarray, np.ndarray, int]] = {}

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        return encode_queries(self.model, texts)

    def bind(self, reference: Any) -> None:
        mine = {p: i for i, p in enumerate(self.data.metadata.paths)}
        ref_paths = reference.metadata.paths
        missing = [p for p in ref_paths if p not in mine]
        if missing or len(mine) != len(ref_paths):
            example = missing[:1] or sorted(set(mine) - set(ref_paths))[:1]
            raise IndexError_(
                f"member {self.name!r} indexes a different set of images than the first member "
                f"({len(mine)} vs {len(ref_paths)}; e.g. {example})"
                "; build every member over the same gallery",
                path=self.data.dir,
            )
        self._perm = np.array([mine[p] for p in ref_paths], dtype=np.int64)
        self._vectors = np.asarray(self.data.vectors)[self._perm]  # fp16, reference order
        # small galleries keep a float32 copy: a single query then skips converting every block (~5 ms/10k)
        self._vectors32 = (
            self._vectors.astype(np.float32) if self._vectors.size <= _FLOAT32_COPY_MAX else None
        )

    def scores(self, texts: Sequence[str], rows: np.ndarray | None) -> np.ndarray:
        assert self._vectors is not None, "bind() first"
        q = self.cache.get(texts)
        if self._vectors32 is not None:
            return q @ (self._vectors32 if rows is None else self._vectors32[rows]).T
        vectors = self._vectors if rows is None else self._vectors[rows]
        out = np.empty((len(q), len(vectors)), dtype=np.float32)
        for start in range(0, len(vectors), _BLOCK):
            block = np.asarray(vectors[start : start + _BLOCK], dtype=np.float32)
            out[:, start : start + len(block)] = q @ block.T
        return out

    def scores_at(self, texts: Sequence[str], rows_per_query: Sequence[np.ndarray]) -> list[np.ndarray]:
        assert self._vectors is not None
        q = self.cache.get(texts)
        return [np.asarray(self._vectors[r], dtype=np.float32) @ q[i] for i, r in enumerate(rows_per_query)]

    def top(self, texts: Sequence[str], n: int, rows: np.ndarray | None) -> list[np.ndarray]:
        import faiss

        from trafficsearch.index import faiss_util

        assert self._perm is not None
        inverse = np.empty(len(self._perm), dtype=np.int64)
        inverse[self._perm] = np.arange(len(self._perm))
        selector = None if rows is None else faiss.IDSelectorBatch(self._perm[rows])
        params = dict(self.data.manifest.get("faiss", {}).get("params") or {})
        try:
            _, found = faiss_util.search(self.data.faiss, self.cache.get(texts), n, params, selector)
        except RuntimeError:  # index type without selector support: exact
            return super().top(texts, n, rows)
        return [inverse[r[r >= 0]] for r in found]

    def stats(self, texts: Sequence[str], rows: np.ndarray | None) -> fusion.RowStats:
        assert self._vectors is not None
        key = b"" if rows is None else np.ascontiguousarray(rows).tobytes()
        if key not in self._gram:
            gram = np.zeros((self._vectors.shape[1],) * 2)
            total = np.zeros(self._vectors.shape[1])
            n = len(self._vectors) if rows is None else len(rows)
            for start in range(0, n, _BLOCK):
                idx = slice(start, start + _BLOCK) if rows is None else rows[start : start + _BLOCK]
                block = np.asarray(self._vectors[idx], dtype=np.float64)
                gram += block.T @ block
                total += block.sum(axis=0)
            if len(self._gram) > 16:
                self._gram.clear()
            self._gram[key] = (gram, total, n)
        gram, total, n = self._gram[key]
        return fusion.gram_stats(self.cache.get(texts), gram, total, n)


# -- the fused first stage ---------------------------------------------------------------------------------
class FusedFirstStage:
    """Replaces the engine's single-index FAISS search: fused top-`depth` over the (filtered) gallery."""

    def __init__(
        self,
        members: Sequence[Member],
        weights: Sequence[float],
        normalization: str = "l2",
        rrf_k: int = fusion.RRF_K,
        candidates: int | None = None,
        kind_weights: dict[str, Sequence[float]] | None = None,
    ) -> None:
        self.members = list(members)
        self.weights = fusion.check_weights(weights, len(self.members))
        self.kind_weights = {
            kind: fusion.check_weights(w, len(self.members)) for kind, w in (kind_weights or {}).items()
        }
        self.normalization = fusion.check_normalization(normalization)
        self.rrf_k, self.n_candidates = rrf_k, candidates

    def query_weights(self, texts: Sequence[str]) -> np.ndarray:
        """[Q, M] weights summing to 1 per query: the weights of the kind its text names, else the default."""
        rows = [self.kind_weights.get(query_kind(t) or "", self.weights) for t in texts]
        w = np.asarray(rows, dtype=np.float64).reshape(len(texts), len(self.members))
        return w / w.sum(axis=1, keepdims=True)

    def normalized_rows(self, texts: Sequence[str], rows: np.ndarray | None) -> list[np.ndarray]:
        """Each member's normalised full rows [Q, N] (weight fitting reuses these)."""
        return [
            fusion.normalize(m.scores(texts, rows), self.normalization, rrf_k=self.rrf_k)
            for m in self.members
        ]

    def search(self, texts: Sequence[str], depth: int, rows: np.ndarray | None) -> list[Candidates]:
        out: list[Candidates] = []
        for start in range(0, len(texts), _QUERY_CHUNK):
            chunk = list(texts[start : start + _QUERY_CHUNK])
            if self.n_candidates is None:
                out.extend(self._exact(chunk, depth, rows))
            else:
                out.extend(self._union(chunk, depth, rows))
        return out

    def _exact(self, texts: list[str], depth: int, rows: np.ndarray | None) -> list[Candidates]:
        normalized = self.normalized_rows(texts, rows)
        if not self.kind_weights:
            fused = fusion.fuse(normalized, self.weights)
        else:
            fused = fusion.fuse_per_query(normalized, self.query_weights(texts))
        return [_top(fused[i], depth, rows) for i in range(len(texts))]

    def _union(self, texts: list[str], depth: int, rows: np.ndarray | None) -> list[Candidates]:
        n = max(int(self.n_candidates or 0), depth)
        tops = [m.top(texts, n, rows) for m in self.members]
        union = [np.unique(np.concatenate([t[i] for t in tops])) for i in range(len(texts))]
        fused = [np.zeros(len(u), np.float32) for u in union]
        weights = self.query_weights(texts)
        for m, (member, top) in enumerate(zip(self.members, tops, strict=True)):
            if not weights[:, m].any():
                continue
            values = member.scores_at(texts, union)
            stats = member.stats(texts, rows) if self.normalization in ("l2", "zscore") else None
            for i, v in enumerate(values):
                if self.normalization == "rrf":
                    rank = {int(r): j + 1 for j, r in enumerate(_sorted_rows(top[i], member, texts[i]))}
                    ranks = np.array([rank.get(int(r), n + 1) for r in union[i]], dtype=np.float64)
                    norm = fusion.normalize(v[None], "rrf", ranks=ranks[None], rrf_k=self.rrf_k)[0]
                else:
                    s = None
                    if stats is not None:
                        s = fusion.RowStats(
                            stats.norm[i : i + 1], stats.mean[i : i + 1], stats.std[i : i + 1]
                        )
                    norm = fusion.normalize(v[None], self.normalization, stats=s)[0]
                fused[i] += np.float32(weights[i, m]) * norm
        out = []
        for u, f in zip(union, fused, strict=True):
            order = np.lexsort((u, -f))[:depth]
            out.append(Candidates(u[order].astype(np.int64), f[order]))
        return out


def _sorted_rows(top: np.ndarray, member: Member, text: str) -> np.ndarray:
    """A member's top rows best first (FAISS returns them sorted; argpartition does not)."""
    scores = member.scores_at([text], [top])[0]
    return top[np.lexsort((top, -scores))]


def _top(row: np.ndarray, depth: int, rows: np.ndarray | None) -> Candidates:
    depth = min(depth, len(row))
    if depth <= 0:
        return Candidates(np.empty(0, np.int64), np.empty(0, np.float32))
    if depth * 2 >= len(row):
        part = np.argsort(-row, kind="stable")[:depth]
    else:  # every entry tied with the k-th joins, so ties go to the lower row as in a stable full sort
        threshold = row[np.argpartition(-row, depth - 1)[depth - 1]]
        part = np.flatnonzero(row >= threshold)
        part = part[np.lexsort((part, -row[part]))][:depth]
    ref_rows = part if rows is None else rows[part]
    return Candidates(ref_rows.astype(np.int64), row[part].astype(np.float32))


# -- opening an ensemble index -----------------------------------------------------------------------------
@dataclass
class Ensemble:
    """What an ensemble engine holds as its `model`: the config and the bound members."""

    config: EnsembleConfig
    members: list[Member]
    models: dict[str, Any]

    @property
    def name(self) -> str:
        return self.config.name


def open_members(
    ensemble_dir: Path, config: EnsembleConfig, device: str = "cpu", models: dict[str, Any] | None = None
) -> tuple[Any, list[Member], dict[str, Any]]:
    """(reference IndexData, bound members, models by spec); `models` supplies already loaded ones.

    Every model's fingerprint must match its member index.
    """
    from trafficsearch.index.files import model_fingerprint
    from trafficsearch.index.store import open_index

    models = dict(models or {})
    members: list[Member] = []
    reference = None
    for m in config.members:
        index_dir = member_index_dir(ensemble_dir, m)
        if not index_dir.is_dir():
            raise IndexError_(
                f"member {m.name!r} has no index at {index_dir}; run `trafficsearch ensemble index`",
                path=ensemble_dir / ENSEMBLE_FILE,
                field=f"members.{m.name}",
            )
        data = open_index(index_dir)
        if m.model not in models:
            models[m.model] = load_member_model(m.model, device=device)
        model = models[m.model]
        if model_fingerprint(dict(model.manifest())) != data.manifest["model_fingerprint"]:
            raise TrafficSearchError(
                f"member {m.name!r}: model {m.model!r} is not the model its index was built with "
                f"({data.manifest['model_name']!r}); rebuild that member's index",
                path=index_dir / "manifest.json",
                field="model_fingerprint",
            )
        reference = reference or data
        members.append(EmbeddingMember(m.name, data, model))
    assert reference is not None
    for member in members:
        member.bind(reference)
    return reference, members, models


def rerank_stage_for(config: EnsembleConfig, data: Any, models: dict[str, Any], device: str = "cpu") -> Any:
    from trafficsearch.search.rerank import ItmRerankStage

    r = config.rerank
    assert r is not None
    model = models.get(r.model) or load_member_model(r.model, device=device)
    if not hasattr(model, "itm_scores"):
        raise ConfigError(
            f"rerank model {r.model!r} has no ITM head (use a BLIP checkpoint)", field="rerank.model"
        )
    models[r.model] = model
    return ItmRerankStage(
        model, data, k=r.k, form=r.form, a=r.a, b=r.b, merge=r.merge, batch_size=r.batch_size
    )


def open_ensemble_engine(
    ensemble_dir: str | Path,
    device: str = "cpu",
    engine_cls: Any = None,
    models: dict[str, Any] | None = None,
) -> Any:
    """A SearchEngine over an ensemble index dir: fused first stage, routing and re-ranking from its file."""
    from trafficsearch.search.engine import SearchEngine

    ensemble_dir = Path(ensemble_dir)
    config = load_ensemble(ensemble_dir / ENSEMBLE_FILE)
    reference, members, models = open_members(ensemble_dir, config, device=device, models=models)
    first = FusedFirstStage(
        members,
        config.weights,
        config.normalization,
        config.rrf_k,
        config.candidates,
        kind_weights=_kind_weight_lists(config),
    )
    rerank = [rerank_stage_for(config, reference, models, device)] if config.rerank else []
    attach_stored_tokens(rerank, reference, [m.data for m in members if hasattr(m, "data")])  # m2-fast
    cls = engine_cls or SearchEngine
    return cls(
        reference,
        Ensemble(config, members, models),
        rerank_stages=rerank,
        first_stage=first,
        route=config.route,
        soft_penalty=config.soft_penalty,
    )


def _kind_weight_lists(config: EnsembleConfig) -> dict[str, list[float]]:
    by_kind = config.kind_weights or {}
    return {kind: [weights[m.name] for m in config.members] for kind, weights in by_kind.items()}


def build_ensemble_index(
    config_path: str | Path,
    gallery: str | Path,
    out: str | Path,
    *,
    labels: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    models: dict[str, Any] | None = None,
    itm_tokens: bool = True,
    **build_kwargs: Any,
) -> Path:
    """Index the gallery once per member (each resumable, via index/build.py), then commit ensemble.yaml.

    `models` maps model specs to loaded models (tests, or a caller that holds them already). With
    `itm_tokens`, a re-ranker that is also a member gets its image tokens stored in that member's index.
    """
    from trafficsearch.index.build import build_index

    config = _resolve_paths(load_ensemble(config_path), Path(config_path).parent)
    out = Path(out)
    models = dict(models or {})
    for m in config.members:
        index_dir = member_index_dir(out, m)
        if m.index and (index_dir / "manifest.json").is_file():
            continue  # an existing index the file points at: reused as is
        if m.model not in models:
            models[m.model] = load_member_model(m.model, device=device)
        model = models[m.model]
        result = build_index(
            gallery,
            index_dir,
            model,
            model_spec=m.model,
            labels=labels,
            device=device,
            progress=progress,
            **build_kwargs,
        )
        if not result.merged:
            raise IndexError_(
                f"member {m.name!r} is not merged yet (other ranks still running)", path=index_dir
            )
    if itm_tokens and config.rerank:  # m2-fast: the re-ranker's image tokens beside its member's index
        for m in config.members:
            if m.model != config.rerank.model:
                continue
            model = models.get(m.model) or load_member_model(m.model, device=device)
            if hasattr(model, "itm_image_tokens") and not has_itm_tokens(member_index_dir(out, m), model):
                write_itm_tokens(member_index_dir(out, m), model, progress=progress)
            break
    save_ensemble(config, out / ENSEMBLE_FILE)
    return out


def _resolve_paths(config: EnsembleConfig, base: Path) -> EnsembleConfig:
    """Model specs that are relative paths become absolute, so the index dir's copy works from anywhere."""

    def fix(spec: str) -> str:
        prefix = BLIP_PREFIX if spec.startswith(BLIP_PREFIX) else ""
        rest = spec[len(prefix) :]
        candidate = base / rest
        if not Path(rest).is_absolute() and candidate.exists():
            return prefix + str(candidate.resolve())
        return spec

    def fix_index(index: str | None) -> str | None:
        if index is None or Path(index).is_absolute() or not (base / index).is_dir():
            return index
        return str((base / index).resolve())

    members = [MemberConfig(m.name, fix(m.model), m.weight, fix_index(m.index)) for m in config.members]
    rerank = None
    if config.rerank:
        rerank = RerankConfig(**{**asdict(config.rerank), "model": fix(config.rerank.model)})
    return EnsembleConfig(**{**config.__dict__, "members": members, "rerank": rerank})


# -- fitting weights on a validation split -----------------------------------------------------------------
@dataclass
class FitResult:
    weights: list[float]
    map_official: float
    baseline: float  # mAP@10 of the starting weights
    per_member: dict[str, float]  # each member alone
    trials: int
    kind_weights: dict[str, list[float]] | None = None  # with by_kind: the weights fitted per query kind


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
) -> FitResult:
    """Coordinate search of member weights on official mAP@k (eval/metrics.evaluate) over labelled records.

    `min_gain` (mAP, 0-1): the least gain a weight change must bring to be kept (see _coordinate_search).

    The gallery is the index; the queries are the records' texts (val_label.txt gives both). Normalised rows
    are computed once per distinct text, so each trial costs one weighted sum and a top-k. `by_kind`: fit
    one weight set per query kind (parsed from the text, as the engine applies them) on that kind's queries.
    """
    from trafficsearch.eval.metrics import evaluate
    from trafficsearch.search.routing import route_matrix

    first: FusedFirstStage = engine.first_stage
    config: EnsembleConfig = engine.model.config
    texts = [r.text for r in records]
    unique = list(dict.fromkeys(texts))
    slot = {t: i for i, t in enumerate(unique)}
    rows = first.normalized_rows(unique, None)
    names = engine.data.metadata.names
    kinds = engine.data.metadata.kinds

    def ranked_for(weights: np.ndarray, subset: Sequence[int]) -> list[list[str]]:
        sub = [r[subset] for r in rows]
        fused = fusion.fuse_per_query(sub, weights / weights.sum(axis=1, keepdims=True))
        fused = route_matrix(fused, [unique[i] for i in subset], kinds, config.route, config.soft_penalty)
        top = np.argsort(-fused, axis=1, kind="stable")[:, :k]
        return [[names[j] for j in row] for row in top]

    def scorer(query_ids: list[int]) -> Callable[[Sequence[float]], float]:
        """official mAP@k over the records `query_ids` for one weight set."""
        subset = sorted({slot[texts[i]] for i in query_ids})
        where = {u: j for j, u in enumerate(subset)}
        queries = [records[i] for i in query_ids]

        def score(weights: Sequence[float]) -> float:
            w = np.tile(np.asarray(weights, dtype=np.float64), (len(subset), 1))
            ranked_unique = ranked_for(w, subset)
            ranked = [ranked_unique[where[slot[texts[i]]]] for i in query_ids]
            return evaluate(queries, records, ranked, rule, k).overall.map_official  # type: ignore[arg-type]

        return score

    everyone = scorer(list(range(len(records))))
    start = [float(w) for w in first.weights]
    baseline = everyone(start)
    per_member = {}
    for i, m in enumerate(first.members):
        solo = [0.0] * len(start)
        solo[i] = 1.0
        per_member[m.name] = everyone(solo)
    weights, best, trials = _coordinate_search(everyone, start, grid, rounds, min_gain)
    trials += len(start) + 1
    if not by_kind:
        return FitResult(weights, best, baseline, per_member, trials)
    kind_weights: dict[str, list[float]] = {}
    for kind in KINDS:
        ids = [i for i, t in enumerate(texts) if query_kind(t) == kind]
        if ids:
            kind_weights[kind], _, n = _coordinate_search(scorer(ids), weights, grid, rounds, min_gain)
            trials += n
    per_query = np.asarray([kind_weights.get(query_kind(t) or "", weights) for t in unique], dtype=np.float64)
    ranked_unique = ranked_for(per_query, list(range(len(unique))))
    combined = evaluate(records, records, [ranked_unique[slot[t]] for t in texts], rule, k)  # type: ignore[arg-type]
    return FitResult(weights, combined.overall.map_official, baseline, per_member, trials, kind_weights)


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
