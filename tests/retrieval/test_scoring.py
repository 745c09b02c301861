"""Rankings, Holidays AP and mAP, ground truths (chipq.retrieval.scoring)."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from helpers import SHARED_DATA
from hypothesis import given
from hypothesis import strategies as st

from chipq.retrieval import scoring as retrieval
from chipq.retrieval.descriptors import DescriptorKind, DescriptorSet, encode
from chipq.retrieval.scoring import (
    GroundTruthError,
    MissingQueries,
    NothingToEvaluate,
    average_precision,
    evaluate,
    holidays_ground_truth,
    load_ground_truth,
    parse_ground_truth,
    similarities,
)

UKBENCH_GT = SHARED_DATA / "ukbench56" / "groundtruth.json"  # was REPO/shared/...: always skipped


def test_doctests():
    assert doctest.testmod(retrieval).failed == 0


@pytest.mark.parametrize(
    ("ranks", "n", "expected"),
    [
        ([0, 1, 2], 3, 1.0),
        ([0, 2], 2, (1 + (1 / 2 + 2 / 3) / 2) / 2),  # 19/24
        ([2, 0], 2, 19 / 24),  # order of the input does not matter
        ([3], 1, (0 + 1 / 4) / 2),  # P_L = 0/3, P_R = 1/4
        ([0], 2, 1 / 2),  # the second positive is never returned: adds 0
        ([], 3, 0.0),
        ([1, 4, 5], 4, ((0 + 1 / 2) / 2 + (1 / 4 + 2 / 5) / 2 + (2 / 5 + 3 / 6) / 2) / 4),
    ],
)
def test_average_precision_by_hand(ranks, n, expected):
    assert average_precision(ranks, n) == pytest.approx(expected, abs=1e-12)


def test_average_precision_refuses_impossible_input():
    for ranks, n in [([0, 0], 2), ([0, 1], 1), ([0], 0), ([-1], 1)]:
        with pytest.raises(ValueError):
            average_precision(ranks, n)


def _angles(names_degrees: dict[str, float]) -> DescriptorSet:
    """2-D unit float descriptors at the given angles: cosine order = angular distance order."""
    rad = np.radians(list(names_degrees.values()))
    codes = np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)
    return DescriptorSet(list(names_degrees), codes, DescriptorKind.FLOAT, 2)


HOLIDAYS = _angles({"100000.jpg": 0, "100001.jpg": 10, "100002.jpg": 45, "100100.jpg": 20, "100101.jpg": 35})


def test_holidays_ranking_by_hand():
    gt, distractors = holidays_ground_truth(HOLIDAYS.names)
    assert gt == {"100000.jpg": ["100001.jpg", "100002.jpg"], "100100.jpg": ["100101.jpg"]}
    assert distractors == 0
    result = evaluate(HOLIDAYS, gt)
    # 100000 (0°) ranks 100001 (10°), 100100 (20°), 100101 (35°), 100002 (45°): positives at 0 and 3
    # -> ((1 + 1)/2 + (1/3 + 2/4)/2) / 2 = 17/24. 100100 (20°) ranks 100001, 100101, 100000, 100002:
    # its positive is at rank 1 -> (0 + 1/2)/2 = 1/4.
    assert [r.ap for r in result.results] == pytest.approx([17 / 24, 1 / 4])
    assert result.mean_ap == pytest.approx((17 / 24 + 1 / 4) / 2)
    assert result.database_size == 5


def test_holidays_names():
    gt, distractors = holidays_ground_truth(
        ["a/100000.jpg", "a/100002.jpg", "a/100001.jpg", "flickr_1.jpg", "100201.jpg", "100300.jpg"]
    )
    # positives in number order; 1002xx has no query; 100300 has no positive; flickr_1 is a distractor
    assert gt == {"100300.jpg": [], "a/100000.jpg": ["a/100001.jpg", "a/100002.jpg"]} and distractors == 1
    with pytest.raises(GroundTruthError, match="same number"):
        holidays_ground_truth(["x/100000.jpg", "y/100000.jpg"])


def test_ties_keep_file_order():
    # Identical bit codes: every score ties, so the ranking is the file order without the query.
    codes = np.zeros((4, 1), np.uint8)
    late = evaluate(DescriptorSet(["q", "a", "b", "p"], codes, DescriptorKind.BIT, 8), {"q": ["p"]})
    assert late.results[0].ap == pytest.approx((0 / 2 + 1 / 3) / 2)  # p at rank 2
    early = evaluate(DescriptorSet(["a", "p", "q", "b"], codes, DescriptorKind.BIT, 8), {"q": ["p"]})
    assert early.results[0].ap == pytest.approx((0 / 1 + 1 / 2) / 2)  # p at rank 1, after a


def test_missing_positive_adds_zero_and_is_counted():
    gt = {"100000.jpg": ["100001.jpg", "100002.jpg", "gone.jpg"]}
    result = evaluate(HOLIDAYS, gt)
    # ranks 0 and 3 as before, N = 3: (1 + 5/12) / 3
    assert result.results[0].ap == pytest.approx((1 + 5 / 12) / 3)
    assert result.results[0].missing == 1 and result.missing_positives == 1


def test_missing_query_is_an_error_unless_deselected():
    gt = {"100000.jpg": ["100001.jpg"], "gone.jpg": ["100002.jpg"]}
    with pytest.raises(MissingQueries, match="1 of 2 queries have no descriptor.*gone.jpg"):
        evaluate(HOLIDAYS, gt)
    result = evaluate(HOLIDAYS, gt, queries=["100000.jpg"])
    assert [r.query for r in result.results] == ["100000.jpg"]
    with pytest.raises(MissingQueries, match="not queries of the ground truth"):
        evaluate(HOLIDAYS, gt, queries=["100001.jpg"])


def test_queries_without_positives():
    result = evaluate(HOLIDAYS, {"100000.jpg": ["100001.jpg"], "100100.jpg": []})
    assert result.no_positives == ["100100.jpg"] and len(result.results) == 1
    with pytest.raises(NothingToEvaluate):
        evaluate(HOLIDAYS, {"100100.jpg": [], "100000.jpg": ["100000.jpg"]})  # self is no positive
    with pytest.raises(NothingToEvaluate, match="no query"):
        evaluate(HOLIDAYS, {})


def test_names_match_by_unique_file_name():
    dset = _angles({"db/x.jpg": 0, "db/y.jpg": 10, "q/x_crop.jpg": 5, "other/y.jpg": 50})
    result = evaluate(dset, {"x_crop.jpg": ["x.jpg"]})  # x.jpg unique -> db/x.jpg, rank 0
    assert result.results[0].ap == 1.0
    result = evaluate(dset, {"x_crop.jpg": ["y.jpg"]})  # y.jpg is ambiguous: missing
    assert result.results[0].missing == 1 and result.results[0].ap == 0.0


def test_exclude_queries():
    # Two edited copies of one photo: with every image in the database, the other copy (a query,
    # not a positive) ranks first; --exclude-queries takes it out.
    dset = _angles({"photos/a.jpg": 30, "photos/b.jpg": 90, "queries/a_1.jpg": 0, "queries/a_2.jpg": 5})
    gt = {"queries/a_1.jpg": ["photos/a.jpg"], "queries/a_2.jpg": ["photos/a.jpg"]}
    assert evaluate(dset, gt).mean_ap == pytest.approx(1 / 4)
    excluded = evaluate(dset, gt, exclude_queries=True)
    assert excluded.mean_ap == 1.0 and excluded.database_size == 2


@given(st.integers(1, 6), st.integers(1, 8), st.integers(1, 70), st.integers(0, 2**32 - 1))
def test_bit_score_is_one_minus_twice_normalised_hamming(nq, ndb, dim, seed):
    """For packed bits, score = 1 − 2·hamming/dim, hamming counted on the unpacked bits."""
    rng = np.random.default_rng(seed)
    q = encode(rng.random((nq, dim)), DescriptorKind.BIT)
    db = encode(rng.random((ndb, dim)), DescriptorKind.BIT)
    bits_q, bits_db = np.unpackbits(q, axis=1), np.unpackbits(db, axis=1)
    hamming = (bits_q[:, None, :] != bits_db[None, :, :]).sum(axis=2)
    np.testing.assert_allclose(similarities(q, db, DescriptorKind.BIT, dim), 1 - 2 * hamming / dim)


def test_cosine_for_float_and_byte():
    codes = np.array([[3, 4], [4, 3], [0, 0]], np.uint8)
    got = similarities(codes, codes, DescriptorKind.BYTE, 2)
    np.testing.assert_allclose(got, [[1, 24 / 25, 0], [24 / 25, 1, 0], [0, 0, 0]])
    floats = codes.astype(np.float32) * 0.1
    np.testing.assert_allclose(similarities(floats, floats, DescriptorKind.FLOAT, 2), got, rtol=1e-6)


def test_query_blocks_do_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(3)
    names = [f"{100000 + 100 * (i // 4) + i % 4}.jpg" for i in range(40)]
    dset = DescriptorSet(names, encode(rng.random((40, 16)), DescriptorKind.BIT), DescriptorKind.BIT, 16)
    gt, _ = holidays_ground_truth(names)
    whole = evaluate(dset, gt)
    monkeypatch.setattr(retrieval, "SCORE_CHUNK_BYTES", 100)  # one query per block, tiny popcount blocks
    assert [r.ap for r in evaluate(dset, gt).results] == [r.ap for r in whole.results]


def test_parse_ground_truth_formats():
    assert parse_ground_truth({"q.jpg": ["a.jpg", "q.jpg", "a.jpg"]}, "gt") == {"q.jpg": ["a.jpg"]}
    ukbench = {"groups": {"0": ["a", "b"]}, "relevant": {"a": ["b"], "b": ["a"]}}
    assert parse_ground_truth(ukbench, "gt") == {"a": ["b"], "b": ["a"]}
    for bad in ([1, 2], {"q": "a.jpg"}, {"q": [1]}):
        with pytest.raises(GroundTruthError, match="gt"):
            parse_ground_truth(bad, "gt")


def test_load_ground_truth(tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps({"q": ["a"]}), encoding="utf-8")
    assert load_ground_truth(tmp_path / "gt.json") == {"q": ["a"]}
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(GroundTruthError, match="bad.json"):
        load_ground_truth(tmp_path / "bad.json")
    with pytest.raises(GroundTruthError, match="cannot read"):
        load_ground_truth(tmp_path / "none.json")


@pytest.mark.skipif(not UKBENCH_GT.is_file(), reason="shared ukbench56 ground truth not present")
def test_ukbench_ground_truth_file():
    gt = load_ground_truth(UKBENCH_GT)
    assert len(gt) == 56 and all(len(v) == 3 for v in gt.values())
    # Perfect descriptors (one direction per group) give mAP 1.
    names = sorted(gt)
    group = [int(n[7:12]) // 4 for n in names]
    angles = {n: g * 90 / 14 for n, g in zip(names, group)}
    assert evaluate(_angles(angles), gt).mean_ap == pytest.approx(1.0)


def test_positives_of_matches_names_as_evaluate_does():
    """One rule for every ground-truth name: exact, else a file name only one of the names has."""
    gt = {"a/q.jpg": ["p.jpg", "x/r.jpg", "gone.jpg"]}
    names = ["q.jpg", "one/p.jpg", "x/r.jpg", "y/r.jpg"]
    lookup = retrieval.NameLookup(names)
    assert retrieval.positives_of(gt, "q.jpg", lookup) == {1, 2}  # r.jpg twice: only the exact one
    assert retrieval.positives_of(gt, "b/q.jpg", lookup) == {1, 2}  # the query by its file name
    assert retrieval.positives_of(gt, "nope.jpg", lookup) is None


def test_zero_descriptors_are_counted_and_all_zero_is_refused():
    names = ["q.jpg", "p.jpg", "x.jpg"]
    codes = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 0]], np.float32)
    gt = {"q.jpg": ["p.jpg"]}
    result = retrieval.evaluate(DescriptorSet(names, codes, DescriptorKind.FLOAT, 3, {}), gt)
    assert result.zero_descriptors == 1 and result.mean_ap == 1.0
    with pytest.raises(retrieval.NothingToEvaluate, match="all 3 descriptors are zero"):
        retrieval.evaluate(DescriptorSet(names, np.zeros((3, 3), np.float32), DescriptorKind.FLOAT, 3, {}), gt)
