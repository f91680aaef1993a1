"""Per-kind fusion weights: a vehicle query fuses with the vehicle weights, a pedestrian query with the
pedestrian ones; `fit_weights(by_kind=True)` finds them; the ensemble file validates and keeps them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from trafficsearch.data.labels import read_labels
from trafficsearch.data.records import Record, is_relevant
from trafficsearch.errors import ConfigError
from trafficsearch.search.engine import SearchEngine
from trafficsearch.search.ensemble import (
    EnsembleConfig,
    FusedFirstStage,
    Member,
    MemberConfig,
    ensemble_from_dict,
    fit_weights,
    load_ensemble,
    save_ensemble,
    with_weights,
)
from trafficsearch.search.routing import query_kind


class ExpertMember(Member):
    """Scores the relevant images of its own kind's queries high; for the other kind's queries it is wrong
    (relevant images lowest)."""

    def __init__(self, name: str, kind: str, gallery: list[Record]) -> None:
        self.name, self.kind, self.gallery = name, kind, gallery
        self.queries: dict[str, Record] = {}

    def scores(self, texts: Sequence[str], rows: np.ndarray | None) -> np.ndarray:
        out = np.zeros((len(texts), len(self.gallery)), np.float32)
        for i, text in enumerate(texts):
            query = self.queries[text]
            sign = 1.0 if query.kind == self.kind else -1.0
            for j, image in enumerate(self.gallery):
                out[i, j] = sign * float(is_relevant(query, image)) + 0.001 * j
        return out if rows is None else out[:, rows]


@pytest.fixture(scope="module")
def records(val_labels_path: Path) -> list[Record]:
    all_records = read_labels(val_labels_path).records
    vehicles = [r for r in all_records if r.kind == "vehicle"][:12]
    pedestrians = [r for r in all_records if r.kind == "pedestrian"][:12]
    chosen = vehicles + pedestrians
    assert all(query_kind(r.text) == r.kind for r in chosen)  # the parser routes these texts right
    return chosen


def _engine(records: list[Record], kind_weights: dict[str, list[float]] | None = None) -> SearchEngine:
    """A real engine over stub members: a gallery of the records' images (metadata only, no vectors)."""
    members = [ExpertMember("veh", "vehicle", records), ExpertMember("ped", "pedestrian", records)]
    for m in members:
        m.queries = {r.text: r for r in records}
    first = FusedFirstStage(members, [1.0, 1.0], "zscore", kind_weights=kind_weights)
    config = EnsembleConfig("kinds", [MemberConfig("veh", "x"), MemberConfig("ped", "y")])
    meta = SimpleNamespace(
        names=[r.image for r in records],
        kinds=np.array([r.kind for r in records]),
        ids=list(range(len(records))),
        paths=[r.image for r in records],
    )
    data = SimpleNamespace(metadata=meta, count=len(records), manifest={})
    return SearchEngine(data, SimpleNamespace(config=config), first_stage=first)  # type: ignore[arg-type]


def test_each_query_fuses_with_the_weights_of_its_kind(records: list[Record]) -> None:
    engine = _engine(records, {"vehicle": [1.0, 0.0], "pedestrian": [0.0, 1.0]})
    car, person = records[0], records[-1]
    weights = engine.first_stage.query_weights([car.text, person.text, "something else"])
    np.testing.assert_allclose(weights, [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    for query in (car, person):
        top = engine.first_stage.search([query.text], 1, None)[0]
        assert is_relevant(query, records[int(top.rows[0])])  # each kind's expert decides its queries


def test_fit_by_kind_finds_each_kinds_expert(records: list[Record]) -> None:
    engine = _engine(records)
    result = fit_weights(engine, records, grid=(0.0, 1.0), rounds=2, by_kind=True)
    assert result.kind_weights == {"vehicle": [1.0, 0.0], "pedestrian": [0.0, 1.0]}
    assert result.map_official == pytest.approx(1.0)
    one_set = fit_weights(engine, records, grid=(0.0, 1.0), rounds=2)
    assert one_set.kind_weights is None and one_set.map_official < 0.9  # one weight set cannot serve both


def test_kind_weights_round_trip_and_bad_entries_name_the_field(tmp_path: Path) -> None:
    base = EnsembleConfig("e", [MemberConfig("a", "ma"), MemberConfig("b", "mb")])
    fitted = with_weights(base, [1.0, 1.0], {"rule": "equal"}, {"vehicle": [2.0, 0.0], "pedestrian": [0, 1]})
    save_ensemble(fitted, tmp_path / "e.yaml")
    loaded = load_ensemble(tmp_path / "e.yaml")
    assert loaded.kind_weights == {"vehicle": {"a": 2.0, "b": 0.0}, "pedestrian": {"a": 0.0, "b": 1.0}}

    members = [{"name": "a", "model": "ma"}, {"name": "b", "model": "mb"}]
    bad = {
        "kind_weights.cyclist": {"cyclist": {"a": 1, "b": 1}},
        "kind_weights.vehicle": {"vehicle": {"a": 1}},  # b missing
        "kind_weights.pedestrian.b": {"pedestrian": {"a": 1, "b": -1}},
    }
    for field, kind_weights in bad.items():
        with pytest.raises(ConfigError) as err:
            ensemble_from_dict({"name": "e", "members": members, "kind_weights": kind_weights})
        assert err.value.field == field
    with pytest.raises(ConfigError) as err:
        ensemble_from_dict({"name": "e", "members": members, "kind_weights": {"vehicle": {"a": 0, "b": 0}}})
    assert err.value.field == "kind_weights.vehicle"
