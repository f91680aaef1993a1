"""Fold-checked fusion-weight fits: fitted weights are kept only when they beat equal weights held out."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from trafficsearch.search.ensemble.folds import distance_from_equal, fold_check, kfold, regularised

GRID = (0.0, 0.5, 1.0, 2.0)


def _problem(quality: np.ndarray):
    """Per-query member qualities: a query's score is the share-weighted quality (a linear toy metric)."""

    def score(ids: list[int], weights) -> float:
        shares = np.asarray(weights, dtype=float) / float(sum(weights))
        return float((quality[ids] @ shares).mean())

    def fit(ids: list[int]) -> list[float]:
        trials = [w for w in itertools.product(GRID, repeat=quality.shape[1]) if sum(w) > 0]
        return list(max(trials, key=lambda w: score(ids, w)))

    return score, fit


def test_kfold_partitions_every_query_once_and_is_seeded():
    parts = kfold(23, 5, seed=3)
    assert sorted(i for p in parts for i in p) == list(range(23))
    assert [len(p) for p in parts] == [5, 5, 5, 4, 4]
    assert kfold(23, 5, seed=3) == parts and kfold(23, 5, seed=4) != parts
    with pytest.raises(ValueError, match="folds"):
        kfold(3, 5)
    with pytest.raises(ValueError, match="at least 2"):
        kfold(10, 1)


def test_a_real_difference_between_members_transfers_and_is_kept():
    rng = np.random.default_rng(0)
    quality = np.stack([1.0 + 0.3 * rng.standard_normal(400), 0.3 * rng.standard_normal(400)], axis=1)
    score, fit = _problem(quality)
    report = fold_check(400, fit, score, [1.0, 1.0], folds=5, seed=0)
    assert all(w[1] == 0.0 for w in report.per_fold_weights)  # every fold finds the useless member
    assert report.mean_gain == pytest.approx(0.5, abs=0.05)
    assert report.keep and report.mean_gain > report.spread
    assert "kept" in report.reason()


def test_weights_fitted_to_noise_do_not_transfer_and_equal_weights_stay():
    rng = np.random.default_rng(1)
    quality = rng.standard_normal((60, 3))  # no member is better than another: any fitted edge is noise
    score, fit = _problem(quality)
    report = fold_check(60, fit, score, [1.0, 1.0, 1.0], folds=5, seed=0)
    assert any(w != [1.0, 1.0, 1.0] for w in report.per_fold_weights)  # the search did move off equal...
    assert not report.keep  # ...but held out that gain is within the folds' spread
    assert report.mean_gain <= report.spread
    assert "equal weights kept" in report.reason()
    assert report.to_dict()["keep"] is False


def test_a_margin_larger_than_the_gain_keeps_equal_weights():
    rng = np.random.default_rng(0)
    quality = np.stack([1.0 + 0.3 * rng.standard_normal(400), 0.3 * rng.standard_normal(400)], axis=1)
    score, fit = _problem(quality)
    assert not fold_check(400, fit, score, [1.0, 1.0], margin=0.6).keep


def test_regularisation_pays_for_distance_from_equal_weights():
    assert distance_from_equal([2, 2, 2]) == 0.0
    assert distance_from_equal([1, 0]) == pytest.approx(1.0)
    flat = regularised(lambda w: 1.0, strength=0.1)
    assert flat([1, 1]) == 1.0 and flat([1, 0]) == pytest.approx(0.9)
    # a tiny edge for one member does not beat the prior; a large one does
    edge = regularised(lambda w: 1.0 + 0.01 * (w[0] / sum(w)), strength=0.1)
    assert edge([1, 1]) > edge([1, 0])
    big = regularised(lambda w: 1.0 + 1.0 * (w[0] / sum(w)), strength=0.1)
    assert big([1, 0]) > big([1, 1])
    with pytest.raises(ValueError, match="strength"):
        regularised(lambda w: 0.0, -1.0)
