"""`trafficsearch ensemble ...` (index, fit, show) and `trafficsearch attributes train`.

An ensemble index dir works wherever an index dir does (`search`, `submit`, `serve`): open_engine
recognises its ensemble.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from trafficsearch.cli.options import device_option, pick_device

console = Console()
err = Console(stderr=True)

ensemble_app = typer.Typer(no_args_is_help=True, help="Index, fit and inspect model ensembles.")
attributes_app = typer.Typer(no_args_is_help=True, help="The attribute-recognition baseline.")


@ensemble_app.command("index")
def index_command(
    config: Path = typer.Argument(..., help="Ensemble file (configs/ensembles/*.yaml)."),
    gallery: Path = typer.Argument(..., help="Folder of gallery images."),
    out: Path = typer.Option(..., "--out", help="Ensemble index dir: one index per member under members/."),
    labels: Path | None = typer.Option(None, "--labels", help="Label file: gives each image its kind."),
    factory: str = typer.Option("Flat", "--factory", help="FAISS factory string for every member."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    workers: int = typer.Option(2, "--workers", min=0),
    device: str = device_option(),
) -> None:
    """Index the gallery once per member (each build resumes), then write OUT/ensemble.yaml."""
    from trafficsearch.search.ensemble import build_ensemble_index

    device = pick_device(device)
    build_ensemble_index(
        config,
        gallery,
        out,
        labels=labels,
        device=device,
        factory=factory,
        batch_size=batch_size,
        workers=workers,
    )
    err.print(f"ensemble index ready: {out} (use it as the index dir of search, submit, serve)")


@ensemble_app.command("fit")
def fit_command(
    config: Path = typer.Argument(..., help="Ensemble file whose member weights are fitted and saved."),
    labels: Path = typer.Option(..., "--labels", help="Validation labels: the queries and the gallery."),
    index: Path = typer.Option(..., "--index", help="Ensemble index dir built over the validation images."),
    rule: str = typer.Option("equal", "--rule", help="Relevance rule: equal or contain."),
    grid: str = typer.Option("0,0.25,0.5,1,2,4", "--grid", help="Weights tried per member."),
    rounds: int = typer.Option(3, "--rounds", min=1, help="Coordinate-search passes over the members."),
    by_kind: bool = typer.Option(
        False, "--by-kind", help="Also fit one weight set per query kind (vehicle, pedestrian): kind_weights."
    ),
    min_gain: float = typer.Option(
        0.0,
        "--min-gain",
        min=0.0,
        help="Least mAP@10 gain (0-1) a weight change must bring to be kept; guards a small split's noise.",
    ),
    regularise: float = typer.Option(
        0.0,
        "--regularise",
        min=0.0,
        help="mAP@10 (0-1) each trial pays per unit of L1 distance of its weight shares from equal shares.",
    ),
    folds: int = typer.Option(
        0,
        "--folds",
        min=0,
        help="Cross-validate the fit on K folds of LABELS; keep it only when its held-out gain over equal "
        "weights beats the folds' spread (0: off).",
    ),
    fold_margin: float = typer.Option(
        0.0, "--fold-margin", min=0.0, help="With --folds: least mean held-out gain (0-1) that keeps the fit."
    ),
    rerank_weight: bool = typer.Option(
        False,
        "--rerank-weight",
        help="Then fit the ITM re-rank weight b (seed form: fused + b x normalised logits) over the fitted "
        "fusion, against the seed's b = 1 (with --folds: kept only when it wins on the held-out folds).",
    ),
    device: str = device_option(),
) -> None:
    """Fit member weights on official mAP@10 (coordinate search) and save them into CONFIG (atomically).

    Fit on labels the reported scores do not use (a held-out split), or the scores flatter the ensemble.

    The ensemble.yaml inside INDEX gets the same weights when it is another file.
    """
    from trafficsearch.data.labels import read_labels
    from trafficsearch.errors import ConfigError
    from trafficsearch.search.ensemble import (
        ENSEMBLE_FILE,
        fit_weights,
        is_ensemble_dir,
        load_ensemble,
        save_ensemble,
        with_rerank_weight,
        with_weights,
    )
    from trafficsearch.search.opener import open_engine

    if folds == 1:
        raise ConfigError("give at least 2 folds, or 0 to fit on all labels without a check", field="--folds")
    if not is_ensemble_dir(index):
        raise ConfigError("not an ensemble index dir (no ensemble.yaml)", path=index, field="--index")
    try:
        values = [float(v) for v in grid.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"expected comma-separated numbers, got {grid!r}", field="--grid") from None
    source = load_ensemble(config)
    engine = open_engine(index, device=pick_device(device))
    if [m.name for m in source.members] != [m.name for m in engine.model.config.members]:
        raise ConfigError("CONFIG and the index's ensemble.yaml name different members", path=config)
    records = read_labels(labels).records
    with err.status("fitting weights ..."):
        result = fit_weights(
            engine,
            records,
            grid=values,
            rounds=rounds,
            rule=rule,
            by_kind=by_kind,
            min_gain=min_gain,
            regularise=regularise,
            folds=folds,
            fold_margin=fold_margin,
        )
    fit = {
        "labels": str(labels),
        "rule": rule,
        "map_official": round(result.map_official, 6),
        "baseline": round(result.baseline, 6),
        "per_member": {k: round(v, 6) for k, v in result.per_member.items()},
        "trials": result.trials,
        "min_gain": min_gain,
        "regularise": regularise,
    }
    if result.folds is not None:
        fit["folds"] = {k: _rounded(v) for k, v in result.folds.items()}
        fit["equal_map"] = round(result.equal_map or 0.0, 6)
    fitted = with_weights(source, result.weights, fit, result.kind_weights)
    inside = index / ENSEMBLE_FILE
    fitted_inside = (
        with_weights(load_ensemble(inside), result.weights, fit, result.kind_weights)
        if inside.resolve() != config.resolve()
        else None
    )
    rerank_fit = None
    if rerank_weight:
        rerank_fit = _fit_rerank(fitted_inside or fitted, index, records, rule, folds, fold_margin, device)
        fit["rerank"] = rerank_fit.to_dict()
        fitted = with_rerank_weight(fitted, rerank_fit.b)
        fitted_inside = None if fitted_inside is None else with_rerank_weight(fitted_inside, rerank_fit.b)
    save_ensemble(fitted, config)
    if fitted_inside is not None:
        save_ensemble(fitted_inside, inside)
    table = Table(title=f"{source.name}: mAP@10 ({rule}) {result.baseline:.4f} -> {result.map_official:.4f}")
    kinds = list(result.kind_weights or {})
    for column in ("member", "alone", "weight", *kinds):
        table.add_column(column)
    for i, (member, weight) in enumerate(zip(source.members, result.weights, strict=True)):
        by_kind = [f"{result.kind_weights[k][i]:g}" for k in kinds]  # type: ignore[index]
        table.add_row(member.name, f"{result.per_member[member.name]:.4f}", f"{weight:g}", *by_kind)
    console.print(table)
    if result.folds is not None:
        f = result.folds
        verdict = "fitted weights kept" if f["keep"] else "equal weights kept (the fit did not transfer)"
        console.print(
            f"{f['folds']} folds: held-out gain over equal weights {f['mean_gain']:+.4f} mean, "
            f"{f['spread']:.4f} spread, margin {f['margin']:.4f}: {verdict}; equal weights score "
            f"{result.equal_map:.4f} on all labels"
        )
    if rerank_fit is not None:
        by_b = ", ".join(f"{b:g}: {m:.4f}" for b, m in rerank_fit.map_by_b.items())
        console.print(f"re-rank weight b, mAP@10 ({rule}) by b: {by_b}; {rerank_fit.reason}")


def _fit_rerank(
    config: Any, index: Path, records: list[Any], rule: str, folds: int, margin: float, device: str
) -> Any:
    """The re-rank weight fitted through an engine over INDEX with the just-fitted fusion weights."""
    from trafficsearch.errors import ConfigError
    from trafficsearch.search.ensemble.rerank_fit import fit_rerank_weight
    from trafficsearch.search.opener import open_engine

    if config.rerank is None:
        raise ConfigError("--rerank-weight needs a rerank section in the ensemble", field="rerank")
    engine = open_engine(config, device=pick_device(device), base_dir=index)
    with err.status("fitting the re-rank weight ..."):
        return fit_rerank_weight(engine, records, rule=rule, folds=folds, fold_margin=margin)


def _rounded(value: object) -> object:
    """Floats (and lists of them) to 6 decimals for the ensemble file's fit record."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


@ensemble_app.command("show")
def show_command(config: Path = typer.Argument(..., help="Ensemble file or ensemble index dir.")) -> None:
    """Validate an ensemble file and print its members, weights, normalisation, routing and re-ranking."""
    from trafficsearch.search.ensemble import load_ensemble

    cfg = load_ensemble(config)
    table = Table(title=f"{cfg.name}: {cfg.normalization}, route {cfg.route}")
    for column in ("member", "model", "weight"):
        table.add_column(column)
    kinds = list(cfg.kind_weights or {})
    for column in kinds:
        table.add_column(f"weight ({column})")
    for m in cfg.members:
        table.add_row(m.name, m.model, f"{m.weight:g}", *[f"{cfg.kind_weights[k][m.name]:g}" for k in kinds])  # type: ignore[index]
    console.print(table)
    if cfg.rerank:
        r = cfg.rerank
        console.print(f"rerank: {r.model} top {r.k}, form {r.form}, merge {r.merge}")


@attributes_app.command("train")
def attributes_train(
    config: Path = typer.Option(..., "--config", "-c", help="YAML with root, out and training settings."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train (or resume) the attribute baseline on ROOT/train; the checkpoint is OUT/last."""
    import yaml

    from trafficsearch.errors import ConfigError
    from trafficsearch.train.attributes import AttributeTrainConfig, train_attributes

    if not config.is_file():
        raise ConfigError("config file not found", path=config)
    data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping", path=config)
    last = train_attributes(AttributeTrainConfig.from_dict(data), progress=not quiet)
    err.print(f"checkpoint: {last}")


def register(app: typer.Typer) -> None:
    app.add_typer(ensemble_app, name="ensemble")
    app.add_typer(attributes_app, name="attributes")
