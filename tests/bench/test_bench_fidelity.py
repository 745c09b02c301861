"""bench/fidelity.py on a tiny VGG-16 and generated photo sets: scores, cache, report."""

from __future__ import annotations

import fidelity
import numpy as np
import pytest

CONFIGS = "ukbench:nip,nip_large,rnip9,rnip14@float;samples:nip"


@pytest.fixture(scope="module")
def fidelity_run(tiny_bench, bench_work):
    def go(**kw):
        return fidelity.run(tiny_bench.model, None, None, bench_work, CONFIGS, tiny_bench.chip_hw, tiny_bench.large_hw,
                            tiny_bench.ukbench, tiny_bench.samples, log=lambda *_: None, **kw)  # fmt: skip

    return go


def test_rows_cover_the_configs(fidelity_run):
    rows = fidelity_run()["rows"]
    got = [(r["dataset"], r["method"], r["model"]) for r in rows]
    assert got == [
        ("ukbench", "nip", "float"), ("ukbench", "nip", "ptq"), ("ukbench", "nip", "random"),
        ("ukbench", "nip_large", "float"),
        ("ukbench", "rnip9", "float"), ("ukbench", "rnip9", "ptq"), ("ukbench", "rnip14", "float"),
        ("samples", "nip", "float"), ("samples", "nip", "ptq"), ("samples", "nip", "random"),
    ]  # fmt: skip
    for row in rows:
        assert all(0.0 <= row[f"map_{kind}"] <= 1.0 for kind in fidelity.KINDS)
        assert ("cosine_to_float" in row) == (row["model"] == "ptq")
    ukbench = [r for r in rows if r["dataset"] == "ukbench"]
    assert all(r["queries"] == 6 and 1.0 <= r["ns_score"] <= 4.0 for r in ukbench)  # every image a query
    samples = [r for r in rows if r["dataset"] == "samples"]
    assert all(r["queries"] == 3 and "ns_score" not in r for r in samples)


def test_second_run_reads_the_cache(fidelity_run):
    first = fidelity_run()
    again = fidelity_run()
    assert all(row["describe_seconds"] is None for row in again["rows"])
    assert [r["map_float"] for r in again["rows"]] == [r["map_float"] for r in first["rows"]]


def test_quick_limit_scores_the_images_it_has(fidelity_run):
    rows = fidelity_run(limit=4, random_floor=False)["rows"]
    assert {r["images"] for r in rows if r["dataset"] == "ukbench"} == {4}


def test_report_names_the_paper_as_another_data_set(fidelity_run):
    page = fidelity.render(fidelity_run())
    assert "INRIA Holidays — a different data set" in page and "0.8694" in page
    assert "UKBench: 6 photos" in page and "samples/: 3 edited queries against 3 photos" in page
    pairing = fidelity.table2_pairing(fidelity_run())
    assert [row[0] for row in pairing] == ["ukbench"] and pairing[0][3] == "—"  # no retrained blob given
    assert pairing[0][4] == "0.8681 / 0.8694"


def test_ns_score_counts_the_top_four():
    names = ["a", "b", "c", "d", "e"]
    vectors = np.eye(5)[[0, 0, 0, 0, 1]].astype(np.float32)  # a-d identical, e apart
    groups = {"0": ["a", "b", "c", "d"], "1": ["e"]}
    assert fidelity.ns_score(names, vectors, groups) == pytest.approx((4 * 4 + 1) / 5)


def test_parse_configs():
    assert fidelity.parse_configs(" ukbench: nip, rnip14@float+ptq ;samples:nip;") == {
        "ukbench": [("nip", None), ("rnip14", {"float", "ptq"})],
        "samples": [("nip", None)],
    }
