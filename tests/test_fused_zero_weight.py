"""A member the fusion weights at 0 for every query is never scored (its text not encoded), and leaving it
out changes no fused score; weight fitting still scores it the first time a trial weights it."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np

from trafficsearch.search.ensemble import FusedFirstStage
from trafficsearch.testing.members import NoiseMember

TEXTS = ["a red car", "A pedestrian in a blue coat", "This is a grey Chery Sedan."]


class CountingNoise(NoiseMember):
    """Noise seeded by `seed` that counts the texts it scored."""

    def __init__(self, seed: int) -> None:
        self.seed, self.scored = seed, 0

    def scores(self, texts: Sequence[str], rows: np.ndarray | None) -> np.ndarray:
        self.scored += len(texts)
        rng = np.random.default_rng([self.seed, *(len(t) for t in texts)])
        full = rng.normal(size=(len(texts), self.n)).astype(np.float32)
        return full if rows is None else full[:, rows]


def _members(n: int = 40) -> list[CountingNoise]:
    members = [CountingNoise(1), CountingNoise(2), CountingNoise(3)]
    for m in members:
        m.bind(SimpleNamespace(count=n))
    return members


def test_a_zero_weight_member_is_not_scored_and_changes_nothing() -> None:
    a, b, c = _members()
    with_zero = FusedFirstStage([a, b, c], [2.0, 0.0, 1.0], "zscore").search(TEXTS, 10, None)
    assert b.scored == 0 and a.scored == c.scored == len(TEXTS)
    a2, _, c2 = _members()
    without = FusedFirstStage([a2, c2], [2.0, 1.0], "zscore").search(TEXTS, 10, None)
    for x, y in zip(with_zero, without, strict=True):
        assert x.rows.tolist() == y.rows.tolist()
        np.testing.assert_array_equal(x.scores, y.scores)


def test_kind_weights_skip_a_member_only_when_no_query_of_the_batch_weights_it() -> None:
    a, b, c = _members()
    kind_weights = {"vehicle": [1.0, 0.0, 1.0], "pedestrian": [1.0, 0.0, 1.0]}
    stage = FusedFirstStage([a, b, c], [1.0, 0.0, 1.0], "l2", kind_weights=kind_weights)
    stage.search(TEXTS, 5, None)
    assert b.scored == 0
    kind_weights["pedestrian"] = [1.0, 1.0, 0.0]  # the pedestrian query now needs b (and c for the others)
    stage = FusedFirstStage([a, b, c], [1.0, 0.0, 1.0], "l2", kind_weights=kind_weights)
    stage.search(TEXTS, 5, None)
    assert b.scored == len(TEXTS) and c.scored == 2 * len(TEXTS)


def test_a_weight_fit_memo_scores_a_member_once_when_a_trial_first_weights_it() -> None:
    a, b, c = _members()
    base = FusedFirstStage([a, b, c], [1.0, 1.0, 1.0], "zscore")
    memo: dict = {}
    first = base.reweighted([1.0, 0.0, 1.0], memo=memo).search(TEXTS, 10, None)
    assert (a.scored, b.scored, c.scored) == (3, 0, 3)
    second = base.reweighted([1.0, 1.0, 0.0], memo=memo).search(TEXTS, 10, None)
    again = base.reweighted([1.0, 0.0, 1.0], memo=memo).search(TEXTS, 10, None)
    assert (a.scored, b.scored, c.scored) == (3, 3, 3)  # b scored once, nothing scored twice
    fresh = FusedFirstStage(_members()[:2], [1.0, 1.0], "zscore").search(TEXTS, 10, None)
    for x, y in zip(second, fresh, strict=True):
        np.testing.assert_array_equal(x.scores, y.scores)
    for x, y in zip(first, again, strict=True):
        assert x.rows.tolist() == y.rows.tolist()
