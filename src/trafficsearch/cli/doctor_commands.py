"""`trafficsearch doctor CONFIG...`: are the weights, tokenizers and configs these configs need on disk?

For an offline GPU box: per training config (configs/seed/*.yaml) and ensemble file, every file its models
need, whether the local caches hold it, where it must go, and the commands that fetch the missing ones on a
connected machine. Exit code 0 when everything is in place, 1 when something is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from trafficsearch.errors import ConfigError

console = Console()
WIDTH = 100
DEFAULT_CONFIGS = (
    "seed/vit-h-14-a",
    "seed/vit-h-14-b",
    "seed/xlm-roberta-large-vit-h-14",
    "seed/blip-large",
    "ensembles/seed",
)


def _training_needs(path: Path) -> list[Any]:
    from trafficsearch.models.pretrained import resolve_if_package
    from trafficsearch.models.requirements import blip_needs, checkpoint_needs, open_clip_needs
    from trafficsearch.train.config import load_config, stage_config

    cfg = load_config(path)
    models = [cfg.model] + [stage_config(cfg, i).model for i in range(len(cfg.stages))]
    needs: list[Any] = []
    for model in models:
        start = resolve_if_package(model.pretrained)  # package:NAME -> its shipped checkpoint dir
        pretrained = Path(start).expanduser() if start else None
        if pretrained is not None and (
            pretrained.is_dir() or not pretrained.suffix and "/" in str(pretrained)
        ):
            needs += checkpoint_needs(pretrained, f"start checkpoint {model.pretrained}")
            if model.family == "clip":
                continue
        if model.family == "blip":
            needs += blip_needs(model.name) if pretrained is None else []
        else:
            needs += open_clip_needs(model.name, model.pretrained)
    return needs


def _ensemble_needs(path: Path, data: dict[str, Any]) -> list[Any]:
    from trafficsearch.models.requirements import spec_needs
    from trafficsearch.search.ensemble import load_ensemble

    config = load_ensemble(path)  # validates the file (one line naming the field when it is wrong)
    specs = [m.model for m in config.members] + ([config.rerank.model] if config.rerank else [])
    needs: list[Any] = []
    for spec in dict.fromkeys(specs):
        needs += spec_needs(spec, base=path.parent)
    return needs


def needs_of(config: str | Path) -> tuple[Path, list[Any]]:
    from trafficsearch.train.config import resolve_config_path

    path = resolve_config_path(config)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", path=path) from None
    if isinstance(data, dict) and "members" in data:
        return path, _ensemble_needs(path, data)
    return path, _training_needs(path)


def _fetch_commands(missing: list[Any]) -> list[str]:
    """One `hf download REPO FILE...` per repo (into this machine's hub cache path), then other commands."""
    from trafficsearch.models.requirements import hub_cache_dir

    files: dict[str, list[str]] = {}
    for need in missing:
        if need.hf:
            files.setdefault(need.hf[0], [])
            if need.hf[1] not in files[need.hf[0]]:
                files[need.hf[0]].append(need.hf[1])
    commands = [
        f"hf download {repo} {' '.join(names)} --cache-dir {hub_cache_dir()}" for repo, names in files.items()
    ]
    return commands + list(dict.fromkeys(n.fetch for n in missing if n.fetch))


def _label(path: Path) -> str:
    return (
        path.stem
        if path.parent.name not in ("seed", "ensembles", "demo")
        else f"{path.parent.name}/{path.stem}"
    )


def doctor(
    configs: list[str] | None = typer.Argument(
        None, help="Training configs and ensemble files (default: the packaged seed configs and ensemble)."
    ),
) -> None:
    """List the weights, tokenizers and configs these configs need, which are missing, and how to fetch them.

    Exit code 0: everything is in place; 1: something is missing (the fetch commands are printed)."""
    from trafficsearch.models.requirements import cache_dirs

    width = min(console.width, WIDTH)
    for name, where in cache_dirs().items():
        console.print(f"{name}: {where}", highlight=False, soft_wrap=True)
    table = Table(width=width, title="files the models need", show_lines=False)
    table.add_column("config", overflow="fold", ratio=3)
    table.add_column("needs", overflow="fold", ratio=4)
    table.add_column("status", overflow="fold", ratio=2)
    table.add_column("where (found, or where it must go)", overflow="fold", ratio=8)
    missing: list[Any] = []
    for config in configs or list(DEFAULT_CONFIGS):
        path, needs = needs_of(config)
        for need in dict.fromkeys(needs):
            ok = need.present
            table.add_row(
                _label(path),
                need.what,
                "ok" if ok else "[red]missing[/]",
                need.found if ok else need.location,
            )
            if not ok:
                missing.append(need)
    console.print(table)
    if not missing:
        console.print("[green]ready[/]: every file these configs need is in place")
        return
    fetch = _fetch_commands(missing)
    local = [n for n in missing if not n.fetch and not n.hf]
    missing = list({n.location: n for n in missing}.values())  # two configs needing one file: one file
    console.print(f"[red]{len(missing)} file(s) missing.[/]")
    if fetch:
        console.print(
            "On a machine with internet (`hf` is huggingface_hub's CLI; older versions: `huggingface-cli`):",
            highlight=False,
        )
        for command in fetch:
            console.print(f"  {command}", highlight=False, soft_wrap=True)
        console.print(
            "then copy each cache folder shown above to the same path here (or point HF_HOME / HF_HUB_CACHE "
            "at the copy); open_clip and transformers read them offline.",
            highlight=False,
        )
    if local:
        console.print(
            "Local files (checkpoints are written by `trafficsearch train -c CONFIG`): put them at the paths "
            "shown, or fix the paths in the config.",
            highlight=False,
        )
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
