"""An ensemble index opens like any index and returns the fused order; fit saves the weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from trafficsearch.data.labels import read_labels
from trafficsearch.errors import IndexError_
from trafficsearch.search import fusion
from trafficsearch.search.engine import SearchEngine
from trafficsearch.search.ensemble import (
    EmbeddingMember,
    FusedFirstStage,
    fit_weights,
    load_ensemble,
)
from trafficsearch.search.opener import Ensemble, open_engine
from trafficsearch.testing.color import (
    COLOR_MODELS,
    ColorModel,
    build_color_ensemble,
    make_color_gallery,
)
from trafficsearch.testing.members import NoiseMember

torch.set_num_threads(1)
MODELS = COLOR_MODELS


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_color_ensemble(tmp_path_factory.mktemp("ens"))


def _manual(engine: SearchEngine, text: str, weights: Sequence[float], method: str) -> list[str]:
    rows = []
    for member in engine.first_stage.members:  # type: ignore[union-attr]
        vectors = np.asarray(member.data.vectors, dtype=np.float32)[member._perm]
        q = member.model.encode_texts([text]).numpy()
        rows.append(q @ vectors.T)
    fused = fusion.fuse_rows(rows, weights, method)[0]
    return [engine.data.metadata.names[i] for i in np.argsort(-fused, kind="stable")]


def test_ensemble_dir_layout_and_open(built: Path) -> None:
    idx = built / "idx"
    assert (idx / "ensemble.yaml").is_file()
    assert (idx / "members" / "a" / "manifest.json").is_file() and (idx / "members" / "b").is_dir()
    engine = open_engine(idx, models=MODELS)
    assert isinstance(engine, SearchEngine) and isinstance(engine.model, Ensemble)
    info = engine.info()
    assert info["model"] == "two-colours" and info["ensemble"]["normalization"] == "l2"
    with pytest.raises(Exception, match="do not pass a model"):
        open_engine(idx, model=ColorModel())


def test_engine_returns_the_fused_order(built: Path) -> None:
    engine = open_engine(built / "idx", models=MODELS)
    for text in ("A red car", "something purple"):
        hits = engine.search([text], k=24)[0]
        assert [h.name for h in hits] == _manual(engine, text, [1.0, 3.0], "l2")
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # the same fused order whatever the order of the query batch, repeated texts included
    batch = engine.search(["blue", "red", "blue"], k=5)
    assert (
        [h.name for h in batch[0]] == [h.name for h in batch[2]] == _manual(engine, "blue", [1, 3], "l2")[:5]
    )


def test_filters_apply_before_fusion(built: Path) -> None:
    engine = open_engine(built / "idx", models=MODELS)
    keep = ["v00.jpg", "v03.jpg", "v05.jpg"]
    hits = engine.search(["red"], k=10, where={"name": keep})[0]
    assert sorted(h.name for h in hits) == sorted(keep) and hits[0].name == "v00.jpg"


@pytest.mark.parametrize("method", ["l2", "zscore", "rrf", "minmax"])
def test_candidate_union_mode_matches_exact_at_the_top(built: Path, method: str) -> None:
    engine = open_engine(built / "idx", models=MODELS)
    members = engine.first_stage.members  # type: ignore[union-attr]
    exact = FusedFirstStage(members, [1, 3], method)
    union = FusedFirstStage(members, [1, 3], method, candidates=6)
    texts = ["red", "blue", "A purple car"]
    for e, u in zip(exact.search(texts, 3, None), union.search(texts, 3, None), strict=True):
        assert e.rows.tolist() == u.rows.tolist()
        if method in ("l2", "zscore"):  # exact statistics from the Gram matrix
            assert np.allclose(e.scores, u.scores, atol=1e-4)


def _color_and_noise(built: Path) -> SearchEngine:
    """The colour member (perfect on these labels) fused with a noise member, equal weights."""
    engine = open_engine(built / "idx", models=MODELS)
    color = engine.first_stage.members[0]  # type: ignore[union-attr]
    noise = NoiseMember()
    noise.bind(engine.data)
    engine.first_stage = FusedFirstStage([color, noise], [1.0, 1.0], "l2")
    engine.model.config.members = [
        engine.model.config.members[0],
        type(engine.model.config.members[0])("noise", "x"),
    ]
    return engine


def test_row_scorer_member_and_fit(built: Path, tmp_path: Path) -> None:
    engine = _color_and_noise(built)
    assert isinstance(engine.first_stage.members[0], EmbeddingMember)  # type: ignore[union-attr]
    records = read_labels(built / "labels.txt").records
    result = fit_weights(engine, records, grid=(0.0, 1.0), rounds=2)
    assert result.weights == [1.0, 0.0]
    assert result.map_official == pytest.approx(1.0) and result.baseline < 1.0
    assert result.per_member["a"] == pytest.approx(1.0)


def test_fold_checked_fit_keeps_weights_that_transfer(built: Path) -> None:
    engine = _color_and_noise(built)
    records = read_labels(built / "labels.txt").records
    result = fit_weights(engine, records, grid=(0.0, 1.0), rounds=2, folds=3)
    assert result.weights == [1.0, 0.0]  # noise switched off, on every fold and on all labels
    assert result.folds is not None and result.folds["folds"] == 3 and result.folds["keep"] is True
    held_out = zip(result.folds["fitted"], result.folds["equal"], strict=True)
    assert all(fitted > equal for fitted, equal in held_out)
    assert result.equal_map is not None and result.equal_map < result.map_official == pytest.approx(1.0)


def test_fold_checked_fit_falls_back_to_equal_weights_when_the_gain_is_too_small(built: Path) -> None:
    engine = _color_and_noise(built)
    records = read_labels(built / "labels.txt").records
    result = fit_weights(engine, records, grid=(0.0, 1.0), rounds=2, by_kind=True, folds=3, fold_margin=2.0)
    assert result.folds is not None and result.folds["keep"] is False
    assert result.weights == [1.0, 1.0] and result.kind_weights is None
    assert result.map_official == result.equal_map < 1.0


def test_regularised_fit_stays_at_equal_weights_unless_the_gain_pays_for_it(built: Path) -> None:
    engine = _color_and_noise(built)
    records = read_labels(built / "labels.txt").records
    free = fit_weights(engine, records, grid=(0.0, 1.0), rounds=2, regularise=0.0)
    dear = fit_weights(engine, records, grid=(0.0, 1.0), rounds=2, regularise=10.0)
    assert free.weights == [1.0, 0.0] and dear.weights == [1.0, 1.0]
    assert dear.map_official == dear.baseline < free.map_official


def test_fit_cli_saves_weights_atomically(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer
    from typer.testing import CliRunner

    from trafficsearch.cli import ensemble_commands
    from trafficsearch.search.ensemble import members

    monkeypatch.setattr(members, "load_model", lambda spec, device="cpu": MODELS[spec])
    app = typer.Typer()
    ensemble_commands.register(app)
    config = tmp_path / "e.yaml"
    config.write_text((built / "ens.yaml").read_text())
    idx_copy = built / "idx" / "ensemble.yaml"
    before = idx_copy.read_text()
    try:
        result = CliRunner().invoke(
            app,
            [
                "ensemble",
                "fit",
                str(config),
                "--labels",
                str(built / "labels.txt"),
                "--index",
                str(built / "idx"),
                "--grid",
                "0,1,3",
                "--folds",
                "3",
                "--regularise",
                "0.001",
            ],
        )
        assert result.exit_code == 0, result.output
        assert "3 folds: held-out gain over equal weights" in result.output
        saved = load_ensemble(config)
        assert saved.fit is not None and saved.fit["map_official"] >= saved.fit["baseline"]
        assert saved.fit["folds"]["folds"] == 3 and len(saved.fit["folds"]["fitted"]) == 3
        assert saved.fit["regularise"] == 0.001 and "equal_map" in saved.fit
        assert load_ensemble(idx_copy).weights == saved.weights
        one = CliRunner().invoke(
            app, ["ensemble", "fit", str(config), "--labels", str(built / "labels.txt"), "--index",
                  str(built / "idx"), "--folds", "1"],
        )  # fmt: skip
        assert one.exit_code != 0 and "at least 2 folds" in str(one.exception)
    finally:
        idx_copy.write_text(before)


def test_members_over_different_galleries_are_refused(built: Path, tmp_path: Path) -> None:
    from trafficsearch.index import build_index

    make_color_gallery(tmp_path / "g", {"x.jpg": "red"})
    build_index(
        tmp_path / "g", tmp_path / "other", MODELS["color2"], model_spec="color2", progress=False, workers=0
    )
    config = load_ensemble(built / "idx")
    text = (built / "idx" / "ensemble.yaml").read_text()
    (tmp_path / "ens").mkdir()
    data = yaml.safe_load(text)
    data["members"][0]["index"] = str(built / "idx" / "members" / "a")
    data["members"][1]["index"] = str(tmp_path / "other")
    (tmp_path / "ens" / "ensemble.yaml").write_text(yaml.safe_dump(data))
    assert config.name == "two-colours"
    with pytest.raises(IndexError_, match="different set of images"):
        open_engine(tmp_path / "ens", models=MODELS)


def test_large_gallery_path_without_float32_copy_gives_the_same_order(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trafficsearch.search.ensemble import members

    texts = ["red Audi.", "blue Audi.", "white Audi."]
    small = open_engine(built / "idx", models=MODELS)
    expected = [[h.name for h in row] for row in small.search(texts, k=8)]
    monkeypatch.setattr(members, "_FLOAT32_COPY_MAX", 0)
    large = open_engine(built / "idx", models=MODELS)
    assert all(m._vectors32 is None for m in large.first_stage.members)  # type: ignore[union-attr]
    assert [[h.name for h in row] for row in large.search(texts, k=8)] == expected


def test_coordinate_search_keeps_only_changes_worth_min_gain() -> None:
    """A weight change that gains less than `min_gain` (noise on a small fit split) is not taken."""
    from trafficsearch.search.ensemble.fit import _coordinate_search

    def score(weights: Sequence[float]) -> float:  # member 0 at 2 gains 0.001; member 1 at 0 gains 0.05
        return 0.5 + (0.001 if weights[0] == 2.0 else 0.0) + (0.05 if weights[1] == 0.0 else 0.0)

    greedy, best, _ = _coordinate_search(score, [1.0, 1.0], (0.0, 1.0, 2.0), rounds=2)
    assert greedy == [2.0, 0.0] and best == pytest.approx(0.551)
    careful, best, _ = _coordinate_search(score, [1.0, 1.0], (0.0, 1.0, 2.0), rounds=2, min_gain=0.003)
    assert careful == [1.0, 0.0] and best == pytest.approx(0.55)


@pytest.mark.parametrize("route", ["off", "soft", "hard"])
def test_fitted_score_equals_the_engine_evaluated_score(built: Path, route: str) -> None:
    """fit_weights ranks through engine.search: the engine opened afresh from the fitted config (in memory)
    scores exactly what the fit reported on the same split."""
    from dataclasses import replace

    from trafficsearch.eval.metrics import evaluate
    from trafficsearch.search.ensemble import with_weights

    records = read_labels(built / "labels.txt").records
    # half the texts name a colour the gallery lacks, so the members disagree and the weights matter
    records = [replace(r, text=r.text.replace("red", "pink")) if i % 2 else r for i, r in enumerate(records)]
    config = replace(load_ensemble(built / "idx"), route=route, soft_penalty=0.05)
    engine = open_engine(config, models=MODELS, base_dir=built / "idx")
    result = fit_weights(engine, records, grid=(0.0, 0.5, 1.0, 3.0), rounds=2, by_kind=True)
    fitted = with_weights(config, result.weights, {}, result.kind_weights)
    fresh = open_engine(fitted, models=MODELS, base_dir=built / "idx")
    hits = fresh.search([r.text for r in records], k=10)
    ranked = [[h.name for h in row] for row in hits]
    score = evaluate(records, records, ranked, "equal", 10).overall.map_official
    assert score == result.map_official
    assert result.kind_weights is not None and set(result.kind_weights) == {"vehicle"}
