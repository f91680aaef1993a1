"""CLI and packaging conventions: one spelling per shared option, `index build` explicit, `--version`,
shell completion, `python -m trafficsearch`, one version source, licence files, declared dependencies."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
import typer.main

import trafficsearch
from trafficsearch.cli import app, main
from trafficsearch.cli.options import KINDS

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "trafficsearch"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> int:
    monkeypatch.setattr(sys, "argv", ["trafficsearch", *map(str, args)])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _commands(group: click.Command, prefix: str = "") -> dict[str, click.Command]:
    out = {}
    for name, command in getattr(group, "commands", {}).items():
        out[prefix + name] = command
        out.update(_commands(command, f"{prefix}{name} "))
    return out


COMMANDS = _commands(typer.main.get_command(app))


def _param(command: click.Command, name: str) -> click.Parameter | None:
    return next((p for p in command.params if p.name == name), None)


def test_shared_options_are_spelled_once() -> None:
    with_k = {n for n, c in COMMANDS.items() if _param(c, "k") is not None}
    assert {"search", "submit", "index tune", "evaluate"} <= with_k
    for name in with_k:
        assert sorted(_param(COMMANDS[name], "k").opts) == ["--k", "-k"], name
    with_device = {n for n, c in COMMANDS.items() if _param(c, "device") is not None}
    assert {"index build", "index add", "index tune", "search", "submit", "serve"} <= with_device
    assert {"ensemble index", "ensemble fit"} <= with_device
    for name in with_device:
        param = _param(COMMANDS[name], "device")
        assert param.opts == ["--device"] and param.default == "auto", name
    for name in ("search", "submit", "serve"):
        param = _param(COMMANDS[name], "rerank")
        assert (
            param.opts == ["--rerank"] and param.secondary_opts == ["--no-rerank"] and param.default is True
        )


def test_kind_takes_the_api_values_only(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:
    from trafficsearch.serve.schemas import Kind

    assert set(KINDS) == set(Kind.__args__)  # the CLI and the HTTP API accept the same kinds
    assert run_cli(monkeypatch, "search", tmp_path, "a red car", "--kind", "unknown") == 2
    err = capsys.readouterr().err
    assert "'unknown' is not one of pedestrian, vehicle" in err and "Traceback" not in err


def test_index_build_is_explicit_and_subcommand_names_are_not_galleries(
    monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "add").mkdir()
    assert run_cli(monkeypatch, "index", "add", "--model", "open_clip:x", "--out", "o") == 2
    err = capsys.readouterr().err
    assert "`trafficsearch index build add --model ... --out ...`" in err and "Traceback" not in err
    # the explicit form reads "add" as the folder (it fails later, on the model name, not on parsing)
    assert run_cli(monkeypatch, "index", "build", "add", "--model", "open_clip:no-such", "--out", "o") == 2
    assert "unknown model 'no-such'" in capsys.readouterr().err
    # the short form still works for other folder names
    (tmp_path / "gallery").mkdir()
    assert run_cli(monkeypatch, "index", "gallery", "--model", "open_clip:no-such", "--out", "o") == 2
    assert "unknown model 'no-such'" in capsys.readouterr().err


def test_python_m_trafficsearch_prints_the_one_version() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-m", "trafficsearch", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout.strip() == f"trafficsearch {trafficsearch.__version__}"


def test_version_is_written_once() -> None:
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "trafficsearch.__version__"}
    literal = re.escape(trafficsearch.__version__)
    holders = [
        p.relative_to(SRC)
        for p in SRC.rglob("*.py")
        if re.search(rf"""["']{literal}["']""", p.read_text(encoding="utf-8"))
    ]
    assert holders == [Path("__init__.py")]  # the HTTP API's version and --version read it from there


def test_shell_completion_is_enabled(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    assert {"install_completion", "show_completion"} <= {p.name for p in typer.main.get_command(app).params}
    monkeypatch.setenv("_TRAFFICSEARCH_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "trafficsearch ind")
    monkeypatch.setenv("COMP_CWORD", "1")
    assert run_cli(monkeypatch) == 0
    assert capsys.readouterr().out.split() == ["index"]


def test_licence_files_and_metadata() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    packaged = (SRC / "resources" / "NOTICE").read_text(encoding="utf-8")
    assert packaged == (ROOT / "NOTICE").read_text(encoding="utf-8")
    assert "cvpr2023_val_label.txt.gz" in packaged and "Apache License, Version 2.0" in packaged
    assert "resources/NOTICE" in PYPROJECT["tool"]["setuptools"]["package-data"]["trafficsearch"]


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """Top-level modules a file imports: (required, optional: inside try/except ImportError)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in node.handlers
        ):
            optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    required: set[str] = set()
    guarded: set[str] = set()
    for node in ast.walk(tree):
        names = guarded if id(node) in optional else required
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return required, guarded - required


def _dist(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_imports_are_declared_and_declared_dependencies_are_used() -> None:
    declared = {_dist(r) for r in PYPROJECT["project"]["dependencies"]}
    stdlib = set(sys.stdlib_module_names)
    owners = importlib.metadata.packages_distributions()
    used: set[str] = set()
    undeclared = []
    for path in sorted(SRC.rglob("*.py")):
        required, optional = _imports(path)
        for module in sorted((required | optional) - stdlib - {"trafficsearch"}):
            dists = {d.lower().replace("_", "-") for d in owners.get(module, [module])}
            if module in required and not dists & declared:
                undeclared.append(f"{path.relative_to(ROOT)}: {module} ({', '.join(sorted(dists))})")
            used |= dists & declared
    assert not undeclared, "imported but not declared in pyproject.toml: " + "; ".join(undeclared)
    unused = declared - used
    assert not unused, f"declared but never imported: {sorted(unused)}"
    assert "tqdm" not in declared and "h11" in declared
