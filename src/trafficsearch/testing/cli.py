"""Run the real CLI entry point in-process, as a user's shell would, and return its exit code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from trafficsearch.cli import main


def run_cli(monkeypatch: Any, *args: str | Path) -> int:
    """`trafficsearch ARGS...` through `trafficsearch.cli.main` (exit code, 0 when it returns); `monkeypatch`
    is pytest's fixture (sys.argv is restored after the test)."""
    monkeypatch.setattr(sys, "argv", ["trafficsearch", *map(str, args)])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
