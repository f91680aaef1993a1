"""Training config: a dataclass tree (model / data / optim / loss / train / stages), YAML + dotted overrides.

Why dataclasses: every key has a type and a default, unknown or mistyped keys fail early with a ConfigError
naming the key, and a new switch is one new field. The resolved tree is saved as YAML beside every run.
Every item of the seed recipe (docs seed-recipe.md) is one switch here; defaults are the CPU demo's, the
configs under configs/seed/ set the seed's values.
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
    family: str = "clip"  # clip (open_clip, train/clip_task.py) | blip (train/blip_task.py)
    name: str = "ts-minilm-vit-s64"  # open_clip model name (ours or built-in) / BLIP config name
    pretrained: str | None = None  # open_clip pretrained tag, a weights file, or a checkpoint dir
    lock_image: bool = False  # freeze the image tower (open_clip lock_image_tower)
    unlocked_image_groups: int = 0  # with lock_image: leave the last N layer groups trainable (seed B: 5)
    lock_text: bool = True  # freeze the text trunk (the projection always trains)
    unlocked_text_layers: int = 0  # with lock_text: leave the last N trunk layers trainable
    cache_text_features: bool = True  # frozen trunk: compute pooled text features once per unique text
    text_cache_file: str | None = None  # where those features are kept (default RUN_DIR/text_features.pt);
    # runs sharing one file (an ablation) encode each caption once; a different trunk's file is ignored


@dataclass
class RandAugmentSettings:
    """data.randaugment: BLIP's RandomAugment (data/randaugment.py); null switches it off."""

    n: int = 2
    magnitude: float = 5.0
    prob: float = 0.5


@dataclass
class PromptsConfig:
    """data.prompts: prompt augmentation per kind (data/prompts.py); pedestrian sentences are extra pairs.

    vehicle_form: "in_place" (the seed's: prompts appended to the caption, one text per vehicle) or "pairs"
    (one extra pair per brand/type/colour prompt).
    """

    vehicles: bool = False
    pedestrians: bool = False
    vehicle_form: str = "in_place"


@dataclass
class DataConfig:
    root: str = "runs/demo/data"  # competition layout: ROOT/train, ROOT/val
    train_split: str = "train"
    val_split: str = "val"
    transform: str = "pad"  # pad | openclip | stretch
    crop_scale: list[float] | None = None  # RandomResizedCrop area range near 1, e.g. [0.95, 1.0]; null: off
    crop_ratio: list[float] = field(default_factory=lambda: [0.75, 1.33])  # aspect range of the crop
    crop_interpolation: str = "bicubic"  # bicubic | bilinear | random (timm's per-image pick, seed ViT-H)
    randaugment: RandAugmentSettings | None = None  # {n: 2, magnitude: 5, prob: 0.5} or null
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    cache_images: bool = True  # keep preprocessed uint8 squares in memory (augmented per step)
    workers: int = 2  # DataLoader workers (decoding when cache_images is off, preloading when on)
    max_train: int | None = None  # use only the first N train records (quick runs)
    max_val: int | None = None
    # skip: unreadable images and bad label lines are left out and listed in RUN_DIR/skipped.jsonl (the
    # seed's train set had ~40 undecodable files of 136,117) | fail: stop at the first one
    on_error: str = "skip"
    max_bad_fraction: float = 0.01  # skip fails the run when more than this share of a split is bad


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
    # one_to_one (InfoNCE, the seed) | same_text (identical captions are positives: the demo's choice)
    # | same_image (pairs of one image are positives) | equal | contain (annotation rules, eval/metrics.py)
    targets: str = "one_to_one"
    truncate_ratio: float = (
        0.0  # drop the largest fraction of per-pair losses of the global batch (seed 0.05)
    )
    truncate_start_step: int = 0  # truncation off before this optimiser step
    # BLIP only (train/blip_momentum.py): momentum encoders + momentum distillation + the ITC queue, as in
    # BLIP's retrieval fine-tuning (seed: 57600, 0.995, 0.4); 0 switches all three off
    queue_size: int = 0  # entries of momentum features (and image ids) ITC also contrasts against
    momentum: float = 0.995  # EMA of the momentum encoders: param_m = m * param_m + (1 - m) * param
    alpha: float = 0.4  # weight of the momentum model's softmax in the ITC targets (ramped over epoch 1)
    # BLIP only: share of ITM negatives drawn by ITC similarity (BLIP and the seed: 1.0), the rest uniformly
    # at random. Why below 1 for the CPU demo: its randomly initialised cross-attention never learned from
    # hard negatives alone (the ITM loss stayed at the prior's H(1/3) = 0.637), while with half of them
    # uniform it did (0.52 after 120 steps); random negatives teach the easy cues the hard ones build on.
    itm_hard_share: float = 1.0


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto (bf16/fp16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16 (autocast; fp16 with GradScaler)
    # | pure_bf16 (weights cast to bf16, no autocast: the seed's ViT-H-14 strategy A)
    precision: str = "auto"
    grad_accum_steps: int = 1  # micro-batches per optimiser step (each a contrastive batch of its own)
    grad_checkpointing: bool = False  # recompute activations in backward (open_clip set_grad_checkpointing)
    threads: int = 2  # torch CPU threads
    log_every: int = 10  # steps between train-loss lines in metrics.jsonl
    save_every: int = 100  # steps between resumable checkpoints (and at every epoch end)
    val_rule: str = "equal"  # relevance rule used to pick the best checkpoint: equal | contain
    output_dir: str = "runs/train"
    max_steps: int | None = None  # stop after this many steps in total (smoke runs)
    # DDP: timeout of the process group's init, barriers and collectives (NCCL watchdog): rank 0's
    # validation and checkpoint hand-off must fit in it
    dist_timeout_s: float = 1800.0
    async_checkpoint: bool = True  # copy state to CPU, write last/ and best/ in a background thread


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # staged fine-tuning (train/stages.py): [{name: s1, <section>: {...overrides}}, ...]; each stage starts
    # from the previous stage's best checkpoint and writes RUN_DIR/<name>
    stages: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_CHOICES: dict[str, tuple[str, ...]] = {
    "data.transform": ("pad", "openclip", "stretch"),
    "data.prompts.vehicle_form": ("in_place", "pairs"),
    "data.crop_interpolation": ("bicubic", "bilinear", "random"),
    "data.on_error": ("skip", "fail"),
    "model.family": ("clip", "blip"),
    "train.precision": ("auto", "fp32", "bf16", "fp16", "pure_bf16"),
    "train.val_rule": ("equal", "contain"),
    "loss.targets": ("one_to_one", "same_text", "same_image", "equal", "contain"),
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
    if dataclasses.is_dataclass(tp):
        obj = tp()
        _apply(obj, value, key + ".", path)
        return obj
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, list | tuple):
            if typing.get_origin(item) is dict:
                return [dict(_coerce(v, dict, f"{key}[{i}]", path)) for i, v in enumerate(value)]
            return [_coerce(v, item, f"{key}[{i}]", path) for i, v in enumerate(value)]
        raise ConfigError(f"expected a list, got {value!r}", path=path, field=key)
    if tp is dict:
        if isinstance(value, dict):
            return value
        raise ConfigError(f"expected a mapping, got {value!r}", path=path, field=key)
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
        if dataclasses.is_dataclass(current) and value is None and type(None) in typing.get_args(hints[name]):
            setattr(obj, name, None)
            continue
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


def stage_config(cfg: Config, index: int) -> Config:
    """The config of stage `index`: the base tree (without `stages`) with the stage's overrides applied.

    A stage's keys are sections (`optim: {lr: 1e-5}`) or dotted keys (`optim.lr: 1e-5`); `name` names it.
    """
    stage = dict(cfg.stages[index])
    stage.pop("name", None)
    out = config_from_dict({**cfg.to_dict(), "stages": []})
    where = f"stages[{index}]."
    for key, value in stage.items():
        if key == "stages":
            raise ConfigError("a stage cannot hold stages", field=where + key)
        try:
            _apply(out, nest(str(key), value), "", None)
        except ConfigError as exc:
            raise ConfigError(exc.message, field=where + (exc.field or str(key))) from None
    validate(out)
    return out


def _validate_momentum(cfg: Config) -> None:
    """loss.queue_size / momentum / alpha: ranges, and what the queue expresses (BLIP, image-id positives)."""
    loss = cfg.loss
    if loss.queue_size < 0:
        raise ConfigError(
            f"must be >= 0 (0 switches the queue off), got {loss.queue_size}", field="loss.queue_size"
        )
    for key, value in (
        ("loss.momentum", loss.momentum),
        ("loss.alpha", loss.alpha),
        ("loss.itm_hard_share", loss.itm_hard_share),
    ):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"must be in [0, 1], got {value}", field=key)
    if loss.itm_hard_share != 1.0 and cfg.model.family != "blip":
        raise ConfigError(
            "ITM negatives are BLIP's (model.family: blip); leave it at 1.0", field="loss.itm_hard_share"
        )
    if loss.queue_size == 0:
        return
    if cfg.model.family != "blip":
        raise ConfigError(
            "the momentum encoders and ITC queue are BLIP's (model.family: blip); set it to 0",
            field="loss.queue_size",
        )
    if loss.targets not in ("one_to_one", "same_image"):
        raise ConfigError(
            f"the ITC queue keeps image ids only, so its positives are pairs of one image: use one_to_one or "
            f"same_image with loss.queue_size > 0, got {loss.targets!r}",
            field="loss.targets",
        )


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    positive = {
        "train.epochs": cfg.train.epochs,
        "train.batch_size": cfg.train.batch_size,
        "train.log_every": cfg.train.log_every,
        "train.save_every": cfg.train.save_every,
        "train.threads": cfg.train.threads,
        "train.grad_accum_steps": cfg.train.grad_accum_steps,
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
    if cfg.model.unlocked_image_groups < 0:
        raise ConfigError("must be >= 0", field="model.unlocked_image_groups")
    if not 0.0 <= cfg.data.max_bad_fraction <= 1.0:
        raise ConfigError(
            f"must be in [0, 1], got {cfg.data.max_bad_fraction}", field="data.max_bad_fraction"
        )
    if cfg.train.dist_timeout_s <= 0:
        raise ConfigError("must be > 0", field="train.dist_timeout_s")
    if cfg.data.workers < 0:
        raise ConfigError("must be >= 0", field="data.workers")
    if cfg.train.batch_size % cfg.train.grad_accum_steps:
        raise ConfigError(
            f"batch size {cfg.train.batch_size} is not divisible into "
            f"{cfg.train.grad_accum_steps} micro-batches",
            field="train.grad_accum_steps",
        )
    for key, pair, upper in (
        ("data.crop_scale", cfg.data.crop_scale, 1.0),
        ("data.crop_ratio", cfg.data.crop_ratio, None),
    ):
        if pair is None:
            continue
        if len(pair) != 2 or not 0 < pair[0] <= pair[1] or (upper is not None and pair[1] > upper):
            bound = f" <= {upper:g}" if upper is not None else ""
            raise ConfigError(f"expected [low, high] with 0 < low <= high{bound}, got {pair}", field=key)
    if cfg.data.randaugment is not None:
        from trafficsearch.data.randaugment import RandAugmentConfig

        try:
            RandAugmentConfig.from_dict(dataclasses.asdict(cfg.data.randaugment))
        except ConfigError as exc:
            raise ConfigError(exc.message, field="data." + (exc.field or "randaugment")) from None
    if not 0.0 <= cfg.loss.truncate_ratio < 1.0:
        raise ConfigError(f"must be in [0, 1), got {cfg.loss.truncate_ratio}", field="loss.truncate_ratio")
    if cfg.loss.truncate_start_step < 0:
        raise ConfigError("must be >= 0", field="loss.truncate_start_step")
    _validate_momentum(cfg)
    names = []
    for i, stage in enumerate(cfg.stages):
        name = stage.get("name")
        if not isinstance(name, str) or not name or "/" in name or name in names:
            raise ConfigError(
                f"every stage needs a unique name without '/', got {name!r}", field=f"stages[{i}].name"
            )
        names.append(name)
        stage_config(cfg, i)
