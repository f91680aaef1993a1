"""Ensemble files: round trip, the packaged ones validate, bad files name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from trafficsearch.errors import ConfigError
from trafficsearch.search.ensemble import (
    EnsembleConfig,
    MemberConfig,
    RerankConfig,
    load_ensemble,
    save_ensemble,
)

PACKAGED = Path(__file__).resolve().parents[1] / "src" / "trafficsearch" / "configs" / "ensembles"


def test_round_trip(tmp_path: Path) -> None:
    config = EnsembleConfig(
        "e",
        [MemberConfig("a", "open_clip:x", 0.5), MemberConfig("b", "blip:y", 2.0, index="/idx/b")],
        normalization="rrf",
        candidates=100,
        route="hard",
        rerank=RerankConfig("blip:y", k=5, form="weighted", a=0.3, b=0.7),
    )
    save_ensemble(config, tmp_path / "e.yaml")
    assert load_ensemble(tmp_path / "e.yaml") == config


def test_packaged_files_validate() -> None:
    names = sorted(p.stem for p in PACKAGED.glob("*.yaml"))
    assert "seed" in names
    seed = load_ensemble(PACKAGED / "seed.yaml")
    assert seed.normalization == "l2" and len(seed.members) == 4 and seed.weights == [1.0] * 4
    assert seed.rerank is not None and (seed.rerank.k, seed.rerank.form) == (10, "seed")
    assert seed.route == "off"  # YAML's bare `off` (a boolean) is read as the route name
    demo = load_ensemble(PACKAGED / "demo.yaml")
    assert [m.name for m in demo.members] == ["clip", "blip", "attributes"]
    assert demo.kind_weights is not None and set(demo.kind_weights) == {"vehicle", "pedestrian"}


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("name: x\nmembers: []\n", "members"),
        ("members:\n  - {name: a, model: m, weight: abc}\n", "members[0].weight"),
        ("members:\n  - {name: a, model: m}\n  - {name: b, weight: 1}\n", "members[1].model"),
        ("members:\n  - {name: a, model: m, wieght: 1}\n", "members[0].wieght"),
        ("members:\n  - {name: a, model: m}\nnormalization: softmax\n", "normalization"),
        ("members:\n  - {name: a, model: m}\nroute: maybe\n", "route"),
        ("members:\n  - {name: a, model: m}\nrerank: {model: b, k: 0}\n", "rerank.k"),
        ("members:\n  - {name: a, model: m}\nrerank: {model: b, form: best}\n", "rerank.form"),
        ("members:\n  - {name: a, model: m, weight: -1}\n", "members[0].weight"),
        ("members:\n  - {name: a, model: m}\n  - {name: a, model: n}\n", "members"),
    ],
)
def test_bad_file_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_ensemble(path)
    assert info.value.field == field and info.value.path == str(path)


def test_invalid_yaml_gives_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("members:\n  - {name: a\n")
    with pytest.raises(ConfigError) as info:
        load_ensemble(path)
    assert info.value.line is not None


def test_broken_yaml_is_one_line_naming_the_line(tmp_path: Path) -> None:
    from trafficsearch.errors import ConfigError

    path = tmp_path / "e.yaml"
    path.write_text("name: e\nmembers: [\n")
    with pytest.raises(ConfigError) as err:
        load_ensemble(path)
    assert err.value.line == 3 and str(err.value.path) == str(path)
    assert "\n" not in err.value.one_line() and "invalid YAML" in err.value.one_line()
