"""`load_model(spec, device)`: the one way to get a model, whatever its family.

A spec is a checkpoint directory (model.json's `family` picks the loader) or `<family>:<rest>`:
`open_clip:NAME[:TAG or weights file]` (also clip-retrieval's `open_clip:NAME/TAG`) or
`blip:<checkpoint dir | packaged config | HF id>`, or `package:NAME`, a pre-trained checkpoint shipped with
the package (models/pretrained.py). Each family registers its loaders (models/family.py) when its module is
imported; a new family adds its module to FAMILY_MODULES.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path
from typing import Any

from trafficsearch.errors import ConfigError
from trafficsearch.models.checkpoint import family_of
from trafficsearch.models.family import Device, Family, registered
from trafficsearch.models.pretrained import is_package_spec, resolve_pretrained

FAMILY_MODULES = (
    "trafficsearch.models.clip",
    "trafficsearch.models.blip",
    "trafficsearch.models.attributes",
)


@cache
def families() -> dict[str, Family]:
    """Every registered family by name (importing the family modules registers them)."""
    for module in FAMILY_MODULES:
        importlib.import_module(module)
    return registered()


def load_model(spec: str | Path, device: Device = "cpu") -> Any:
    """Load a model from a checkpoint directory or a `<family>:<rest>` spec (see the module docstring)."""
    text = str(spec)
    if is_package_spec(text):  # a checkpoint shipped with the package (models/pretrained.py)
        text = str(resolve_pretrained(text, field="model"))
    known = families()
    prefix, sep, rest = text.partition(":")
    if sep and prefix in known and not Path(text).is_dir():
        family = known[prefix]
        if family.create is None:
            raise ConfigError(f"family {prefix!r} loads checkpoint directories only", field="model")
        return family.create(rest, device)
    path = Path(text)
    if path.is_dir():
        name = family_of(path)
        if name not in known:
            raise ConfigError(
                f"unknown model family {name!r}; known: {', '.join(sorted(known))}",
                path=path / "model.json",
                field="family",
            )
        return known[name].load(path, device)
    raise ConfigError(
        "model spec is neither a checkpoint directory (with model.json) nor "
        "'open_clip:<name>[:<tag or path>]' / 'blip:<config or checkpoint>'",
        path=text,
    )
