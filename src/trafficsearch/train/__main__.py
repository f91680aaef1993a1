"""`python -m trafficsearch.train --config FILE [key=value ...]`: the entry point torchrun can wrap.

Same options as `trafficsearch train` (cli/train_commands.py); kept here with argparse because train/ sits
below cli/ and must not import it.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console


def main(argv: list[str] | None = None) -> None:
    from trafficsearch.errors import TrafficSearchError
    from trafficsearch.train.config import load_config
    from trafficsearch.train.loop import train, write_summary

    parser = argparse.ArgumentParser(
        prog="python -m trafficsearch.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", "-c", help="YAML config (e.g. configs/demo/default.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=3e-4 train.epochs=2")
    parser.add_argument("--out", "-o", help="run dir (default: train.output_dir)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_intermixed_args(argv)
    console = Console(stderr=True)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.out is not None:
            cfg.train.output_dir = args.out
        result = train(cfg, resume=args.resume, show_progress=not args.quiet, console=console)
        write_summary(result)
    except TrafficSearchError as exc:
        console.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted; run the same command with --resume to continue")
        sys.exit(130)
    best = f"{100 * result.best_map:.2f}" if result.best_map is not None else "n/a"
    skipped = f"; {result.skipped} bad items skipped (skipped.jsonl)" if result.skipped else ""
    console.print(
        f"done: step {result.step}, epoch {result.epoch}, best val mAP@10 ({cfg.train.val_rule}) {best}; "
        f"checkpoints in {result.run_dir}/best and {result.run_dir}/last{skipped}"
    )


if __name__ == "__main__":
    main()
