"""The build plan: which images get which ids, how they are cut into shards, and the config that must not
change while a build resumes (model, shard size, gallery, labels). Written once, before any encoding."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trafficsearch.errors import IndexError_
from trafficsearch.index.files import FORMAT_VERSION, PLAN
from trafficsearch.ioutil import atomic_write_json

DEFAULT_SHARD_SIZE = 4096
# Config keys that decide what the vectors are: a resumed build must see the same values.
LOCKED_KEYS = ("format_version", "model_fingerprint", "shard_size", "gallery_root", "max_pixels")


@dataclass(frozen=True)
class Entry:
    """One planned image: `path` relative to the gallery root (absolute if added from elsewhere)."""

    path: str
    name: str
    kind: str


@dataclass
class Plan:
    config: dict[str, Any]
    entries: list[Entry]
    shards: list[tuple[int, int]] = field(default_factory=list)

    @property
    def gallery_root(self) -> Path:
        return Path(self.config["gallery_root"])

    def append(self, entries: list[Entry]) -> list[int]:
        """Add entries as new shards after the existing ones (finished shards never change); new shard ids."""
        start = len(self.entries)
        self.entries.extend(entries)
        size = int(self.config["shard_size"])
        new = []
        for s in range(start, len(self.entries), size):
            self.shards.append((s, min(s + size, len(self.entries))))
            new.append(len(self.shards) - 1)
        return new

    def save(self, index_dir: Path) -> None:
        atomic_write_json(
            index_dir / PLAN,
            {
                "config": self.config,
                "entries": [[e.path, e.name, e.kind] for e in self.entries],
                "shards": [list(s) for s in self.shards],
            },
            indent=None,
        )

    @classmethod
    def load(cls, index_dir: Path) -> Plan | None:
        path = index_dir / PLAN
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                config=data["config"],
                entries=[Entry(*e) for e in data["entries"]],
                shards=[(int(a), int(b)) for a, b in data["shards"]],
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexError_(
                f"build plan is unreadable ({exc}); delete the directory and rebuild", path=path
            ) from None


def new_plan(config: dict[str, Any], entries: list[Entry]) -> Plan:
    plan = Plan(config={"format_version": FORMAT_VERSION, **config}, entries=[])
    plan.append(entries)
    return plan


def check_compatible(plan: Plan, config: dict[str, Any], index_dir: Path) -> None:
    """Raise a clear error when a resumed/extended build would mix vectors from different settings."""
    wanted = {"format_version": FORMAT_VERSION, **config}
    for key in LOCKED_KEYS:
        have, want = plan.config.get(key), wanted.get(key)
        if have != want:
            what = {
                "model_fingerprint": f"model {plan.config.get('model_name')!r} ({have}), not "
                f"{wanted.get('model_name')!r} ({want})",
            }.get(key, f"{key}={have!r}, not {want!r}")
            raise IndexError_(
                f"this index was started with {what}; use the same settings to resume, "
                "or a new --out directory",
                path=index_dir / PLAN,
                field=key,
            )
