"""Training config: a dataclass tree (model / data / optim / loss / train), YAML + dotted CLI overrides.

Why dataclasses: every key has a type and a default, unknown or mistyped keys fail early with a ConfigError
naming the key, and a new switch is one new field. The resolved tree is saved as YAML beside every run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trafficsearch.errors import ConfigError


@dataclass
class ModelConfig:
    name: str = "ts-minilm-vit-s64"  # open_clip model name (ours or built-in)
    pretrained: str | None = None  # open_clip pretrained tag, a weights file, or a checkpoint dir
    lock_text: bool = True  # freeze the text trunk (the projection always trains)
    unlocked_text_layers: int = 0  # with lock_text: leave the last N trunk layers trainable
    cache_text_features: bool = True  # frozen trunk: compute pooled text features once per unique text


@dataclass
class DataConfig:
    root: str = "runs/demo/data"  # competition layout: ROOT/train, ROOT/val
    train_split: str = "train"
    val_split: str = "val"
    transform: str = "pad"  # pad | openclip
    cache_images: bool = True  # keep preprocessed uint8 squares in memory (no per-step decoding)
    workers: int = 2  # DataLoader workers (decoding when cache_images is off, preloading when on)
    max_train: int | None = None  # use only the first N train records (quick runs)
    max_val: int | None = None


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    grad_clip: float | None = 1.0


@dataclass
class LossConfig:
    kind: str = "clip"  # clip (InfoNCE) | multi_positive (identical captions in a batch are all positives)


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16/fp16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    threads: int = 2  # torch CPU threads
    log_every: int = 10  # steps between train-loss lines in metrics.jsonl
    save_every: int = 100  # steps between resumable checkpoints (and at every epoch end)
    val_rule: str = "equal"  # relevance rule used to pick the best checkpoint: equal | contain
    output_dir: str = "runs/train"
    max_steps: int | None = None  # stop after this many steps in total (smoke runs)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_CHOICES: dict[str, tuple[str, ...]] = {
    "data.transform": ("pad", "openclip"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "train.val_rule": ("equal", "contain"),
    "loss.kind": ("clip", "multi_positive"),
}


def _coerce(value: Any, tp: Any, key: str, path: str | None) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, path)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - only the types above are used in the tree
        return value
    raise ConfigError(f"expected {tp.__name__}, got {value!r}", path=path, field=key)


def _apply(obj: Any, data: dict[str, Any], prefix: str, path: str | None) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {data!r}", path=path, field=prefix.rstrip(".") or None)
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for name, value in data.items():
        key = prefix + str(name)
        if name not in names:
            raise ConfigError(f"unknown key; known: {', '.join(sorted(names))}", path=path, field=key)
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            _apply(current, value, key + ".", path)
            continue
        value = _coerce(value, hints[name], key, path)
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"{value!r} is not one of {', '.join(_CHOICES[key])}", path=path, field=key)
        setattr(obj, name, value)


def parse_override(text: str) -> tuple[str, Any]:
    """'optim.lr=3e-4' -> ('optim.lr', 0.0003); values are YAML scalars ('null', 'true', '2', 'a b')."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not key=value (e.g. optim.lr=3e-4)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and raw.strip().lower() in ("none", "~"):
        value = None
    return key, value


def nest(key: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


BUILTIN_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def resolve_config_path(path: str | Path) -> Path:
    """A YAML file path, or the name of a packaged config such as `demo/default` or `seed/vit-h-14-a`."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    name = str(path).removeprefix("configs/")
    for builtin in (BUILTIN_CONFIGS / name, BUILTIN_CONFIGS / f"{name}.yaml"):
        if builtin.is_file():
            return builtin
    known = sorted(
        str(p.relative_to(BUILTIN_CONFIGS).with_suffix("")) for p in BUILTIN_CONFIGS.rglob("*.yaml")
    )
    raise ConfigError(f"config file not found (packaged configs: {', '.join(known)})", path=path)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- YAML file <- `key=value` overrides; raises ConfigError naming the offending key."""
    cfg = Config()
    if path is not None:
        path = resolve_config_path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise ConfigError(
                f"invalid YAML: {getattr(exc, 'problem', exc)}",
                path=path,
                line=mark.line + 1 if mark else None,
            ) from None
        _apply(cfg, data, "", str(path))
    for text in overrides:
        key, value = parse_override(text)
        _apply(cfg, nest(key, value), "", None)
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    cfg = Config()
    _apply(cfg, data, "", None)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    positive = {
        "train.epochs": cfg.train.epochs,
        "train.batch_size": cfg.train.batch_size,
        "train.log_every": cfg.train.log_every,
        "train.save_every": cfg.train.save_every,
        "train.threads": cfg.train.threads,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"must be > 0, got {value}", field=key)
    if cfg.optim.lr <= 0:
        raise ConfigError(f"must be > 0, got {cfg.optim.lr}", field="optim.lr")
    if cfg.optim.warmup_steps < 0:
        raise ConfigError("must be >= 0", field="optim.warmup_steps")
    if cfg.model.unlocked_text_layers < 0:
        raise ConfigError("must be >= 0", field="model.unlocked_text_layers")
    if cfg.data.workers < 0:
        raise ConfigError("must be >= 0", field="data.workers")
