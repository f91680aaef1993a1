"""Attribute-recognition baseline (the 3rd-place team's approach): predict attributes, rank by agreement.

A small CNN with heads for kind (2), the 21 pedestrian attributes (binary) and vehicle colour (11), brand (65)
and type (6). At search time the query is parsed (`parse_query`) and images are ranked by the
log-probability of what the text states.

It fits the embedding interface, so it is indexed like any model and fused like any member: the image
vector is the concatenation of every head's log-probabilities, the text vector a 0/1 selector of the stated
values, and their dot product is log P(kind, stated attributes | image) under independent heads. Vectors
are not L2-normalised (they are not cosines); a text that states nothing scores 0 everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from trafficsearch.data.query_parse import parse_query
from trafficsearch.data.transforms import Preprocess, build_transform
from trafficsearch.data.vocab import BRANDS, COLORS, N_ATTRIBUTES, VEHICLE_TYPES
from trafficsearch.errors import ConfigError
from trafficsearch.ioutil import atomic_open, atomic_write_json
from trafficsearch.models.checkpoint import state_digest
from trafficsearch.models.family import register_family

FAMILY = "attributes"
WEIGHTS_FILE = "weights.safetensors"
MODEL_FILE = "model.json"
KINDS = ("vehicle", "pedestrian")
LOG_FLOOR = -30.0  # fp16 index vectors: log-probabilities below this carry no ranking information

# Layout of the image/text vectors: (head, first column, width).
_K0 = 0
_P0 = _K0 + len(KINDS)  # P(attribute i present) at _P0 + i, P(absent) at _P0 + 21 + i
_C0 = _P0 + 2 * N_ATTRIBUTES
_B0 = _C0 + len(COLORS)
_T0 = _B0 + len(BRANDS)
EMBED_DIM = _T0 + len(VEHICLE_TYPES)


class AttributeNet(nn.Module):
    """conv(3x3, stride 2) blocks -> global average pool -> one linear layer per head."""

    def __init__(self, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for i in range(depth):
            out = width * 2 ** min(i, 2)
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.kind = nn.Linear(channels, len(KINDS))
        self.pedestrian = nn.Linear(channels, N_ATTRIBUTES)
        self.color = nn.Linear(channels, len(COLORS))
        self.brand = nn.Linear(channels, len(BRANDS))
        self.vtype = nn.Linear(channels, len(VEHICLE_TYPES))

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(pixels)
        return {
            "kind": self.kind(h),
            "pedestrian": self.pedestrian(h),
            "color": self.color(h),
            "brand": self.brand(h),
            "type": self.vtype(h),
        }


def log_prob_vector(logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """Head logits -> [B, EMBED_DIM] log-probabilities in the vector layout, floored at LOG_FLOOR."""
    ped = logits["pedestrian"]
    parts = [
        F.log_softmax(logits["kind"], dim=-1),
        F.logsigmoid(ped),
        F.logsigmoid(-ped),
        F.log_softmax(logits["color"], dim=-1),
        F.log_softmax(logits["brand"], dim=-1),
        F.log_softmax(logits["type"], dim=-1),
    ]
    return torch.cat(parts, dim=-1).clamp_min(LOG_FLOOR)


def query_vector(text: str) -> torch.Tensor:
    """The 0/1 selector of what `text` states (kind, pedestrian attributes, vehicle colour/brand/type)."""
    v = torch.zeros(EMBED_DIM)
    parsed = parse_query(text)
    if parsed.kind is None:
        return v
    v[_K0 + KINDS.index(parsed.kind)] = 1.0
    if parsed.kind == "pedestrian":
        for i, value in parsed.stated.items():
            v[_P0 + i if value else _P0 + N_ATTRIBUTES + i] = 1.0
    elif parsed.vehicle is not None:
        vehicle = parsed.vehicle
        if vehicle.color in COLORS:
            v[_C0 + COLORS.index(vehicle.color)] = 1.0
        if vehicle.brand in BRANDS:
            v[_B0 + BRANDS.index(vehicle.brand)] = 1.0
        if vehicle.type in VEHICLE_TYPES:
            v[_T0 + VEHICLE_TYPES.index(vehicle.type)] = 1.0
    return v


class AttributeModel:
    """The RetrievalModel interface over an AttributeNet (see the module docstring for the vector layout)."""

    def __init__(
        self, net: AttributeNet, preprocess: Preprocess, name: str = "attributes", config: dict | None = None
    ) -> None:
        self.net = net.eval()
        self.preprocess = preprocess
        self.name = name
        self.embed_dim = EMBED_DIM
        self.image_size = preprocess.image_size
        self.config = dict(config or {"width": 32, "depth": 4})
        self.checkpoint_path: Path | None = None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return build_transform(self.preprocess)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.net.eval()
            return log_prob_vector(self.net(pixels.to(self.device, torch.float32))).float().cpu()

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, EMBED_DIM)
        return torch.stack([query_vector(t) for t in texts])

    def manifest(self) -> dict[str, Any]:
        return {
            "family": FAMILY,
            "name": self.name,
            "embed_dim": EMBED_DIM,
            "image_size": self.image_size,
            "preprocess": self.preprocess.to_dict(),
            "weights_sha256": "state:" + state_digest(self.net)[:32],
        }

    def model_json(self) -> dict[str, Any]:
        return {
            "family": FAMILY,
            "name": self.name,
            "net": self.config,
            "preprocess": self.preprocess.to_dict(),
            "vocab": {"colors": list(COLORS), "brands": list(BRANDS), "types": list(VEHICLE_TYPES)},
        }

    def save(self, directory: str | Path) -> Path:
        """weights.safetensors + model.json, each written atomically."""
        from safetensors.torch import save

        out = Path(directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        with atomic_open(out / WEIGHTS_FILE, "wb") as handle:
            handle.write(save(state, metadata={"family": FAMILY}))
        atomic_write_json(out / MODEL_FILE, self.model_json())
        return out


def create_attribute_model(
    image_size: int = 64, width: int = 32, depth: int = 4, seed: int = 0, name: str = "attributes"
) -> AttributeModel:
    torch.manual_seed(seed)
    pre = Preprocess(kind="pad", image_size=image_size)
    return AttributeModel(AttributeNet(width, depth), pre, name, {"width": width, "depth": depth})


def load_attribute_model(path: str | Path, device: str | torch.device = "cpu") -> AttributeModel:
    from safetensors.torch import load_file

    directory = Path(path)
    meta_path = directory / MODEL_FILE
    if not meta_path.is_file():
        raise ConfigError("not an attribute checkpoint: model.json is missing", path=meta_path)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("family") != FAMILY:
        raise ConfigError(f"expected family {FAMILY!r}, got {meta.get('family')!r}", path=meta_path)
    vocab = meta.get("vocab", {})
    if vocab.get("brands", list(BRANDS)) != list(BRANDS) or vocab.get("colors", list(COLORS)) != list(COLORS):
        raise ConfigError("the checkpoint's vocabulary differs from this version's", path=meta_path)
    net_cfg = meta.get("net", {})
    net = AttributeNet(int(net_cfg.get("width", 32)), int(net_cfg.get("depth", 4)))
    try:
        net.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
    except (RuntimeError, FileNotFoundError) as exc:
        raise ConfigError(f"weights do not load: {str(exc).splitlines()[0]}", path=directory) from None
    model = AttributeModel(
        net.to(device), Preprocess.from_dict(meta["preprocess"]), meta.get("name", "attributes")
    )
    model.config = dict(net_cfg)
    model.checkpoint_path = directory
    return model


register_family(FAMILY, load_attribute_model)
