"""The ITM re-rank weight fitted on labelled queries: the seed form's `b`, a fit that switches off an ITM
head that scrambles a good fusion, one that turns up an ITM head that fixes a noisy fusion, the seed's 1:1
kept when nothing beats it on the folds, and the engine reproducing the fitted score."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from trafficsearch.data.labels import read_labels
from trafficsearch.errors import ConfigError
from trafficsearch.eval.metrics import evaluate
from trafficsearch.search.engine import SearchEngine
from trafficsearch.search.ensemble import FusedFirstStage
from trafficsearch.search.ensemble.rerank_fit import fit_rerank_weight
from trafficsearch.search.opener import open_engine
from trafficsearch.search.rerank import ItmRerankStage, combine
from trafficsearch.testing.color import COLOR_MODELS, ColorModel, ColorTransform, build_color_ensemble
from trafficsearch.testing.members import NoiseMember

torch.set_num_threads(1)


class ColourItm:
    """An ITM head that reads the colour: right (`sign` 1) or exactly wrong (`sign` -1) about every pair."""

    def __init__(self, sign: float) -> None:
        self.sign, self.model, self.pairs = sign, ColorModel(0), 0

    def image_transform(self) -> ColorTransform:
        return self.model.image_transform()

    def itm_scores(
        self, texts: Sequence[str], pixels: torch.Tensor, *, batch_size: int = 32, probabilities: bool = False
    ) -> torch.Tensor:
        self.pairs += len(texts)
        match = (self.model.encode_texts(texts) * self.model.encode_images(pixels)).sum(dim=1) * 5.0
        return self.sign * match


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_color_ensemble(tmp_path_factory.mktemp("rerank-fit"), n=40)


def _engine(built: Path, itm: ColourItm, noisy: bool, b: float = 1.0) -> SearchEngine:
    engine = open_engine(built / "idx", models=COLOR_MODELS)
    if noisy:
        color = engine.first_stage.members[0]  # type: ignore[union-attr]
        noise = NoiseMember()
        noise.bind(engine.data)
        engine.first_stage = FusedFirstStage([color, noise], [1.0, 1.0], "l2")
    engine.rerank_stages = [ItmRerankStage(itm, engine.data, k=10, form="seed", b=b)]  # type: ignore[arg-type]
    return engine


def _map(engine: SearchEngine, records: list, rerank: bool) -> float:
    hits = engine.search([r.text for r in records], k=10, rerank=rerank)
    ranked = [[h.name for h in row] for row in hits]
    return evaluate(records, records, ranked, "equal", 10).overall.map_official


def test_seed_form_weights_the_normalised_logits_by_b() -> None:
    fused = np.array([0.02, 0.01, 0.005], np.float32)
    logits = np.array([-1.0, 2.0, 2.0], np.float32)
    assert np.allclose(combine(fused, logits, "seed", b=0.5), fused + 0.5 * logits / 3.0)
    assert np.allclose(combine(fused, logits, "seed", b=0.0), fused)
    assert np.allclose(combine(fused, logits, "seed"), fused + logits / 3.0)  # the seed's 1:1 by default


def test_an_itm_head_that_scrambles_a_good_fusion_is_switched_off(built: Path) -> None:
    records = read_labels(built / "labels.txt").records
    engine = _engine(built, ColourItm(-1.0), noisy=False)
    assert _map(engine, records, rerank=True) < _map(engine, records, rerank=False) == pytest.approx(1.0)
    fit = fit_rerank_weight(engine, records, grid=(0.0, 1.0, 2.0), folds=3)
    assert fit.b == 0.0 and fit.baseline == 1.0
    assert fit.folds is not None and fit.folds["keep"] is True and "kept" in fit.reason
    assert fit.map_by_b[1.0] < fit.map_by_b[0.0] == pytest.approx(1.0)
    # the engine with the fitted weight scores what the fit measured
    assert _map(_engine(built, ColourItm(-1.0), noisy=False, b=fit.b), records, True) == pytest.approx(1.0)


def test_an_itm_head_that_fixes_a_noisy_fusion_is_turned_up(built: Path) -> None:
    records = read_labels(built / "labels.txt").records
    itm = ColourItm(1.0)
    engine = _engine(built, itm, noisy=True)
    fit = fit_rerank_weight(engine, records, grid=(0.0, 1.0, 100.0), folds=3)
    assert fit.map_by_b[100.0] > fit.map_by_b[0.0]
    assert fit.b == max(fit.map_by_b, key=lambda b: (fit.map_by_b[b], -abs(b - 1.0)))
    assert fit.b > 0.0
    fitted = _engine(built, ColourItm(1.0), noisy=True, b=fit.b)
    assert _map(fitted, records, rerank=True) == pytest.approx(fit.map_by_b[fit.b])
    # one ITM pass over the unique texts' top 10s, however many grid values and folds were tried
    assert itm.pairs == 10 * len({r.text for r in records})


def test_the_seeds_weight_is_kept_when_no_other_beats_it_on_the_folds(built: Path) -> None:
    records = read_labels(built / "labels.txt").records
    engine = _engine(built, ColourItm(1.0), noisy=False)  # fusion already perfect: every b ties
    fit = fit_rerank_weight(engine, records, grid=(0.0, 0.5, 1.0, 2.0), folds=3)
    assert fit.b == 1.0 and fit.folds is not None and fit.folds["keep"] is False
    assert "the seed's b = 1 kept" in fit.reason
    assert set(fit.to_dict()["map_by_b"]) == {"0.0", "0.5", "1.0", "2.0"}


def test_the_fit_needs_one_seed_form_itm_stage(built: Path) -> None:
    records = read_labels(built / "labels.txt").records
    engine = open_engine(built / "idx", models=COLOR_MODELS)
    with pytest.raises(ConfigError, match="exactly one ITM re-rank stage"):
        fit_rerank_weight(engine, records)
    engine.rerank_stages = [ItmRerankStage(ColourItm(1.0), engine.data, form="itm_prob")]  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seed form"):
        fit_rerank_weight(engine, records)


def test_fit_cli_fits_and_saves_the_rerank_weight(tmp_path: Path) -> None:
    import typer
    import yaml
    from typer.testing import CliRunner

    from trafficsearch.cli import ensemble_commands
    from trafficsearch.search.ensemble import build_ensemble_index, load_ensemble
    from trafficsearch.testing.color import write_color_vehicles

    packaged = Path(__file__).resolve().parents[1] / "src/trafficsearch/configs/ensembles/tiny-test.yaml"
    config = tmp_path / "e.yaml"
    config.write_text(packaged.read_text().replace("route: soft", "route: 'off'"))
    write_color_vehicles(tmp_path / "g", tmp_path / "labels.txt", 12)
    build_ensemble_index(config, tmp_path / "g", tmp_path / "idx", progress=False, workers=0)
    app = typer.Typer()
    ensemble_commands.register(app)
    args = ["ensemble", "fit", str(config), "--labels", str(tmp_path / "labels.txt")]
    args += ["--index", str(tmp_path / "idx"), "--grid", "1", "--folds", "3", "--rerank-weight"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "re-rank weight b" in result.output
    saved, inside = load_ensemble(config), load_ensemble(tmp_path / "idx" / "ensemble.yaml")
    assert saved.fit is not None and set(saved.fit["rerank"]["map_by_b"]) >= {"0.0", "1.0"}
    assert saved.rerank is not None and inside.rerank is not None
    assert saved.rerank.b == inside.rerank.b == saved.fit["rerank"]["b"]
    assert yaml.safe_load(config.read_text())["rerank"]["b"] == saved.rerank.b
    # without a rerank section the option is refused with the field named
    plain = tmp_path / "plain.yaml"
    raw = yaml.safe_load(config.read_text())
    raw.pop("rerank")
    plain.write_text(yaml.safe_dump(raw))
    (tmp_path / "idx" / "ensemble.yaml").write_text(yaml.safe_dump(raw))
    refused = CliRunner().invoke(app, [*args[:2], str(plain), *args[3:]])
    assert refused.exit_code != 0 and "rerank section" in str(refused.exception)
