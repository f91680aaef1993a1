"""`python -m trafficsearch.train --config FILE [key=value ...]`: the entry point torchrun can wrap."""

from __future__ import annotations

import sys

from trafficsearch.cli.train_commands import train_app


def main() -> None:
    from trafficsearch.cli import err_console
    from trafficsearch.errors import TrafficSearchError

    try:
        train_app(standalone_mode=False)
    except TrafficSearchError as exc:
        err_console.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; run the same command with --resume to continue")
        sys.exit(130)


if __name__ == "__main__":
    main()
