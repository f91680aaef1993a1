"""Metrics: hand-computed fixtures, a cross-check against records.is_relevant, and the official reference."""

from __future__ import annotations

import random

import pytest

from trafficsearch.data.labels import read_labels
from trafficsearch.data.records import Record, is_relevant, parse_vehicle_attribute
from trafficsearch.errors import TrafficSearchError
from trafficsearch.eval.metrics import evaluate, judge, random_ranking, recall_ks
from trafficsearch.eval.submission import read_infer

# Male, age 18-60, back to the camera, long sleeves: the smallest valid vector.
BASE = (0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0)


def vehicle(image: str, attributes: str) -> Record:
    return Record(
        image, "vehicle", attributes, f"A {attributes}", vehicle=parse_vehicle_attribute(attributes)
    )


def pedestrian(image: str, vector: tuple[int, ...]) -> Record:
    return Record(image, "pedestrian", ",".join(map(str, vector)), "A pedestrian.", vector=vector)


def with_bits(vector: tuple[int, ...], **changes: int) -> tuple[int, ...]:
    out = list(vector)
    for position, value in changes.items():
        out[int(position[1:])] = value
    return tuple(out)


@pytest.fixture()
def small():
    gallery = [
        vehicle("a.jpg", "white Audi."),
        vehicle("b.jpg", "white Audi."),
        vehicle("c.jpg", "red BMW."),
        pedestrian("p1.jpg", BASE),
        pedestrian("p2.jpg", with_bits(BASE, a7=1)),  # + hat
        pedestrian("p3.jpg", with_bits(BASE, a0=1)),  # female
    ]
    queries = [gallery[0], gallery[2], gallery[3]]
    ranked = [["c.jpg", "a.jpg", "a.jpg", "b.jpg"], ["a.jpg", "b.jpg"], ["p2.jpg", "p1.jpg", "p3.jpg"]]
    return queries, gallery, ranked


def test_official_ap_counts_duplicates_and_divides_by_hits(small):
    queries, gallery, ranked = small
    result = evaluate(queries, gallery, ranked, "equal")
    # q0: hits at 2, 3 (repeat of a.jpg, counted again), 4 -> (1/2 + 2/3 + 3/4) / 3
    q0 = (1 / 2 + 2 / 3 + 3 / 4) / 3
    assert result.ap[0] == pytest.approx(q0)
    assert result.ap[1] == 0.0  # nothing relevant found -> 0
    assert result.ap[2] == pytest.approx(0.5)  # only p1 equals the query, at rank 2
    assert result.overall.map_official == pytest.approx((q0 + 0 + 0.5) / 3)
    assert result.per_kind["vehicle"].map_official == pytest.approx(q0 / 2)
    assert result.per_kind["pedestrian"].map_official == pytest.approx(0.5)
    assert result.per_kind["vehicle"].n_queries == 2 and result.per_kind["pedestrian"].n_queries == 1


def test_map_over_min_r_counts_each_image_once(small):
    queries, gallery, ranked = small
    result = evaluate(queries, gallery, ranked, "equal")
    # q0: R = 2; a.jpg at 2 (1/2), its repeat skipped, b.jpg at 4 (2/4) -> 1.0 / 2
    # q2: R = 1; p1 at rank 2 -> 0.5
    assert result.per_kind["vehicle"].map_at_k == pytest.approx((0.5 + 0.0) / 2)
    assert result.overall.map_at_k == pytest.approx((0.5 + 0.0 + 0.5) / 3)


def test_contain_rule_accepts_extra_attributes_but_not_another_gender(small):
    queries, gallery, ranked = small
    result = evaluate(queries, gallery, ranked, "contain")
    # p2 (extra hat) and p1 are relevant, p3 (female) is not: (1/1 + 2/2) / 2
    assert result.ap[2] == pytest.approx(1.0)
    assert result.per_kind["pedestrian"].map_at_k == pytest.approx(1.0)  # R = 2
    assert result.per_kind["pedestrian"].recall[1] == 1.0
    # vehicles stay equal
    equal = evaluate(queries, gallery, ranked, "equal")
    assert result.per_kind["vehicle"].map_official == equal.per_kind["vehicle"].map_official


def test_recall_at_k(small):
    queries, gallery, ranked = small
    result = evaluate(queries, gallery, ranked, "equal")
    assert recall_ks(10) == (1, 5, 10)
    assert result.overall.recall[1] == 0.0  # no query has a relevant image first
    assert result.overall.recall[5] == pytest.approx(2 / 3)
    assert result.overall.recall[10] == pytest.approx(2 / 3)
    assert result.to_dict()["overall"]["recall"]["5"] == pytest.approx(2 / 3)


def test_short_list_wins_official_but_not_min_r():
    gallery = [vehicle(f"{i}.jpg", "white Audi.") for i in range(12)] + [vehicle("x.jpg", "red BMW.")]
    queries = [gallery[0], gallery[0], gallery[0]]
    ranked = [
        ["0.jpg"],  # short and right: official 1.0, but 1 of min(12, 10) found
        [f"{i}.jpg" for i in range(10)],  # ten right
        ["x.jpg"] * 11 + ["3.jpg"],  # official runs past k: a hit at rank 12 still counts
    ]
    result = evaluate(queries, gallery, ranked, "equal", k=10)
    assert list(result.ap) == pytest.approx([1.0, 1.0, 1 / 12])
    assert result.overall.map_at_k == pytest.approx((0.1 + 1.0 + 0.0) / 3)
    assert result.overall.recall[10] == pytest.approx(2 / 3)
    assert evaluate(queries, gallery, ranked, "equal", k=2).overall.map_at_k == pytest.approx((0.5 + 1.0) / 3)


def test_unknown_names_are_wrong_and_counted():
    gallery = [vehicle("a.jpg", "white Audi.")]
    result = evaluate([gallery[0]], gallery, [["ghost.jpg", "a.jpg", "ghost2.jpg"]])
    assert result.n_unknown == 2
    assert result.ap[0] == pytest.approx(0.5)  # one hit, at rank 2: (1/2) / 1
    assert result.overall.map_at_k == pytest.approx(0.5)


def test_empty_lists_score_zero():
    gallery = [vehicle("a.jpg", "white Audi.")]
    result = evaluate([gallery[0], gallery[0]], gallery, [[], ["a.jpg"]])
    assert list(result.ap) == [0.0, 1.0]
    assert result.overall.recall[1] == 0.5


def test_mismatched_lengths_and_bad_rule_are_user_errors(small):
    queries, gallery, ranked = small
    with pytest.raises(TrafficSearchError, match="3 queries"):
        evaluate(queries, gallery, ranked[:2])
    with pytest.raises(TrafficSearchError, match="relevance rule"):
        evaluate(queries, gallery, ranked, rule="fuzzy")  # type: ignore[arg-type]


def _random_vector(rng: random.Random) -> tuple[int, ...]:
    v = [0] * 21
    v[0] = rng.randint(0, 1)
    v[rng.choice((1, 2, 3))] = 1
    v[rng.choice((4, 5, 6))] = 1
    v[rng.choice((13, 14))] = 1
    for i in (7, 8, 9, 10, 11, 12, 19, 20):
        v[i] = int(rng.random() < 0.3)
    return tuple(v)


@pytest.mark.parametrize("rule", ["equal", "contain"])
def test_vectorised_relevance_matches_is_relevant(rule):
    rng = random.Random(7)
    colors, brands = ["white", "red"], ["Audi", "BMW"]
    gallery = [vehicle(f"v{i}.jpg", f"{rng.choice(colors)} {rng.choice(brands)}.") for i in range(40)]
    gallery += [vehicle(f"t{i}.jpg", rng.choice(["SUV.", "Sedan."])) for i in range(10)]
    gallery += [pedestrian(f"p{i}.jpg", _random_vector(rng)) for i in range(150)]
    queries = [rng.choice(gallery) for _ in range(80)]
    names = [g.image for g in gallery] + ["missing.jpg"]
    ranked = [[rng.choice(names) for _ in range(rng.randint(0, 14))] for _ in queries]
    judgement = judge(queries, gallery, ranked, rule)
    ap = evaluate(queries, gallery, ranked, rule).ap
    by_name = {g.image: g for g in gallery}
    for i, (query, row) in enumerate(zip(queries, ranked, strict=True)):
        expected = [name in by_name and is_relevant(query, by_name[name], rule) for name in row]
        assert list(judgement.hits[i, : len(row)]) == expected
        assert judgement.n_relevant[i] == sum(is_relevant(query, g, rule) for g in gallery)
        # the official scorer, written the slow way
        found = total = 0
        for j, hit in enumerate(expected, start=1):
            if hit:
                found += 1
                total += found / j
        assert ap[i] == pytest.approx(total / found if found else 0.0)


def test_random_ranking_is_reproducible_distinct_and_from_the_gallery():
    gallery = [vehicle(f"{i}.jpg", "white Audi.") for i in range(30)]
    names = {g.image for g in gallery}
    a = random_ranking(gallery, n_queries=5, k=10, seed=3)
    assert a == random_ranking(gallery, n_queries=5, k=10, seed=3)
    assert a != random_ranking(gallery, n_queries=5, k=10, seed=4)
    assert all(len(row) == 10 and len(set(row)) == 10 and set(row) <= names for row in a)
    assert all(len(row) == 30 for row in random_ranking(gallery, 2, k=50, seed=0))


def test_official_baseline_reference_values(val_labels_path, infer_path):
    gallery = read_labels(val_labels_path).records
    infer = read_infer(infer_path)
    equal = evaluate(infer.records, gallery, infer.ranked_names, "equal")
    assert round(equal.overall.map_official, 4) == 0.2268
    assert round(equal.per_kind["vehicle"].map_official, 4) == 0.6129
    assert round(equal.per_kind["pedestrian"].map_official, 4) == 0.0267
    contain = evaluate(infer.records, gallery, infer.ranked_names, "contain")
    assert round(contain.overall.map_official, 4) == 0.2334
    assert round(contain.per_kind["pedestrian"].map_official, 4) == 0.0367
    assert equal.n_unknown == 0
    # sanity of the other numbers: a random ranking is far below the baseline
    rand = evaluate(infer.records, gallery, random_ranking(gallery, len(gallery), 10, seed=0), "equal")
    assert rand.per_kind["vehicle"].recall[10] < equal.per_kind["vehicle"].recall[10] / 10
