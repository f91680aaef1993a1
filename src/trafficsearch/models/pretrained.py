"""Pre-trained checkpoints shipped with the package, named `package:NAME` in a config or a model spec.

Why here: one place turns a name into a checkpoint directory (resources/pretrained/NAME/), so a config's
`model.pretrained: package:clip-default`, `load_model("package:blip-small")` and the demo resolve it alike
and fail alike, with a ConfigError naming the field. The directories are ordinary checkpoint dirs
(model.json + weights.safetensors) that the family loaders read; they hold only what pre-training changed:
model.json's `from_base` lists the tensors (the frozen MiniLM trunk) that the loader takes from their own
package instead. `manifest.json` beside them gives, per name, the command, seed and sha256 that made it.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from trafficsearch.errors import ConfigError

PACKAGE_PREFIX = "package:"
MANIFEST = "manifest.json"
FROM_BASE = "from_base"  # model.json key: {"text_init": "@minilm", "keys": [names taken from the base]}


def pretrained_root() -> Path:
    """resources/pretrained/ inside the installed package."""
    return Path(str(resources.files("trafficsearch.resources"))) / "pretrained"


def read_manifest(root: Path | None = None) -> dict[str, Any]:
    """manifest.json: {"checkpoints": {name: {"command", "seed", "sha256", ...}}} (empty when absent)."""
    path = (root or pretrained_root()) / MANIFEST
    if not path.is_file():
        return {"checkpoints": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", path=path, line=exc.lineno) from None
    if not isinstance(data, dict) or not isinstance(data.get("checkpoints"), dict):
        raise ConfigError("expected an object with a 'checkpoints' object", path=path, field="checkpoints")
    return data


def shipped_names(root: Path | None = None) -> list[str]:
    root = root or pretrained_root()
    return sorted(p.name for p in root.iterdir() if (p / "model.json").is_file()) if root.is_dir() else []


def is_package_spec(spec: object) -> bool:
    return isinstance(spec, str) and spec.startswith(PACKAGE_PREFIX)


def resolve_pretrained(spec: str, field: str = "model.pretrained", root: Path | None = None) -> Path:
    """`package:NAME` -> its checkpoint directory; ConfigError naming `field` when unknown or incomplete."""
    if not is_package_spec(spec):
        raise ConfigError(f"expected {PACKAGE_PREFIX}<name>, got {spec!r}", field=field)
    name = spec.removeprefix(PACKAGE_PREFIX)
    root = root or pretrained_root()
    known = shipped_names(root)
    folder = root / name
    if not name or "/" in name or not folder.is_dir():
        raise ConfigError(
            f"unknown packaged checkpoint {name!r}; shipped: {', '.join(known) or 'none'}", field=field
        )
    for file in ("model.json", "weights.safetensors"):
        if not (folder / file).is_file():
            raise ConfigError(f"packaged checkpoint {name!r} has no {file}", path=folder / file, field=field)
    return folder


def resolve_if_package(spec: str | None, field: str = "model.pretrained") -> str | None:
    """A config value with `package:NAME` replaced by its directory; anything else unchanged."""
    return str(resolve_pretrained(spec, field)) if is_package_spec(spec) else spec


def check_from_base(info: dict[str, Any], missing: list[str], unexpected: list[str], path: Path) -> None:
    """After a non-strict load: exactly the tensors model.json says come from the base may be absent."""
    listed = set((info.get(FROM_BASE) or {}).get("keys", []))
    if unexpected or set(missing) != listed:
        extra = sorted(set(missing) - listed)[:3]
        raise ConfigError(
            f"weights do not match model.json: missing {extra}, unexpected {unexpected[:3]}",
            path=path / "weights.safetensors",
        )
