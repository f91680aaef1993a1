"""The `trafficsearch` command line: one typer app; each area registers its commands from its own module."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from trafficsearch.errors import TrafficSearchError

app = typer.Typer(
    name="trafficsearch",
    help="Find pedestrians and vehicles in traffic-camera crops from a text description.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

# Modules that add commands to `app` (each defines `register(app)`). A module that fails to import fails the
# whole CLI loudly: a typo must not silently drop a command.
COMMAND_MODULES = (
    "trafficsearch.cli.data_commands",
    "trafficsearch.cli.synth_commands",
    "trafficsearch.cli.train_commands",
    "trafficsearch.cli.index_commands",
    "trafficsearch.cli.eval_commands",
    "trafficsearch.cli.ensemble_commands",
    "trafficsearch.cli.serve_commands",
    "trafficsearch.cli.demo_commands",
)


def _register_all() -> None:
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(app)


_register_all()


def main() -> None:
    """Entry point: user errors become one red line and exit code 2, never a traceback."""
    try:
        app(standalone_mode=False)
    except TrafficSearchError as exc:
        err_console.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted; finished work is kept, run the same command again to resume")
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: typer prints them like click does
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        sys.exit(getattr(exc, "exit_code", 2))


if __name__ == "__main__":
    main()
