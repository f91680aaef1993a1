"""`trafficsearch synth ...`: render label files, generate a synthetic data set, draw a contact sheet."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()
synth_app = typer.Typer(
    help="Synthetic traffic crops in the competition layout (the embedded demo data).", no_args_is_help=True
)


@synth_app.command("render")
def render_cmd(
    labels: Path = typer.Option(..., "--labels", help="Label file (image$attributes$text)."),
    out: Path = typer.Option(..., "--out", help="Folder for the images (resumes: existing images are kept)."),
    seed: int = typer.Option(0, help="Render seed; same seed, same pixels."),
    domain: str = typer.Option("web", help="web (train/val style) or camera (test-style vehicles)."),
    workers: int = typer.Option(2, help="Processes."),
) -> None:
    """Render one image per label line."""
    from trafficsearch.data.synth.generate import render_labels

    done = render_labels(labels, out, seed=seed, domain=domain, workers=workers)  # type: ignore[arg-type]
    console.print(f"rendered {done} images into {out}")


@synth_app.command("generate")
def generate_cmd(
    out: Path = typer.Option(..., "--out", help="Data set root (train/, val/, test/ are created)."),
    train: int = typer.Option(..., "--train", help="Train records."),
    val: int = typer.Option(..., "--val", help="Val records."),
    seed: int = typer.Option(0, "--seed"),
    noise: float = typer.Option(0.0, "--noise", help="Share of train lines given a wrong label."),
    test: int = typer.Option(
        0, "--test", help="Test records (colour+brand+type vehicle queries, camera domain)."
    ),
    workers: int = typer.Option(2, "--workers"),
    corpus: str = typer.Option(
        "competition",
        "--corpus",
        help="competition (the task's captions) or web (alt-text pre-training corpus: train/ and val/ only).",
    ),
) -> None:
    """Write a synthetic data set in the competition layout."""
    from trafficsearch.data.synth.generate import CORPORA, generate_dataset, generate_web_corpus
    from trafficsearch.errors import ConfigError

    if corpus not in CORPORA:
        raise ConfigError(f"{corpus!r} is not one of {', '.join(CORPORA)}", field="--corpus")
    if corpus == "web":
        if test or noise:
            raise ConfigError("the web corpus has train and val only, without label noise", field="--corpus")
        counts = generate_web_corpus(out, train, val, seed=seed, workers=workers)
    else:
        counts = generate_dataset(out, train, val, seed=seed, noise_rate=noise, n_test=test, workers=workers)
    console.print("wrote " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" records under {out}")


@synth_app.command("sheet")
def sheet_cmd(
    split_dir: Path = typer.Argument(..., help="A split folder (e.g. DATA/train) or a *_label.txt file."),
    out: Path | None = typer.Option(None, "--out", help="PNG to write (default: SPLIT/contact_sheet.png)."),
    n: int = typer.Option(24, "--n", help="Samples."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Draw a contact sheet of samples with their captions."""
    from trafficsearch.data.synth.sheet import write_contact_sheet

    target = out or (split_dir if split_dir.is_dir() else split_dir.parent) / "contact_sheet.png"
    path = write_contact_sheet(split_dir, None, target, n=n, seed=seed)
    console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(synth_app, name="synth")
