"""The `trafficsearch` command line: one typer app; each area registers its commands from its own module."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from trafficsearch import __version__
from trafficsearch.errors import TrafficSearchError

app = typer.Typer(
    name="trafficsearch",
    help="Find pedestrians and vehicles in traffic-camera crops from a text description.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"trafficsearch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Find pedestrians and vehicles in traffic-camera crops from a text description."""


# Modules that add commands to `app` (each defines `register(app)`). A module that fails to import fails the
# whole CLI loudly: a typo must not silently drop a command.
COMMAND_MODULES = (
    "trafficsearch.cli.data_commands",
    "trafficsearch.cli.synth_commands",
    "trafficsearch.cli.train_commands",
    "trafficsearch.cli.pretrain_commands",
    "trafficsearch.cli.index_commands",
    "trafficsearch.cli.eval_commands",
    "trafficsearch.cli.ensemble_commands",
    "trafficsearch.cli.serve_commands",
    "trafficsearch.cli.demo_commands",
    "trafficsearch.cli.doctor_commands",
)


def _register_all() -> None:
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(app)


_register_all()


def main() -> None:
    """Entry point: user errors become one red line and exit code 2, never a traceback."""
    try:
        # one program name however it is started (script or python -m): usage lines and completion agree
        code = app(standalone_mode=False, prog_name="trafficsearch")  # typer.Exit(n) comes back as n
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
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
