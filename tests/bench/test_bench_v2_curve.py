"""bench/v2_curve.py: the rows it measures, runs end to end on a tiny model (--quick), renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import v2_curve

from chipq.quant.allocate import Layout
from chipq.quant.plan import LayerSpec
from chipq.quant.sensitivity import Sensitivity


def _sens(layout: Layout) -> Sensitivity:
    """A made-up sensitivity of 13 layers: m, alpha and keep axes at 1 bit on every layer."""
    n = len(layout.convs)
    grid = [[0.01 * 4.0 ** -(m - 1) for m in range(1, 6)] for _ in range(n)]
    v2 = [{"1a6": {"dist2": 0.011, "noise": 0.0}, "1a4": {"dist2": 0.02, "noise": 0.0},
           "1k50": {"dist2": 0.03, "noise": 0.0}} for _ in range(n)]  # fmt: skip
    return Sensitivity(layers=[c[0] for c in layout.convs], images=1, views=1, ref_cosine=0.99, ref_noise=0.0,
                       cosine=grid, dist2=grid, sqnr_db=grid, noise=grid, seconds=0.0, v2_bits=1, v2=v2)  # fmt: skip


def _vgg_layout() -> Layout:
    cfg = [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256),
           (512, 256), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]  # fmt: skip
    return Layout(17, tuple((f"c{i}", o, c) for i, (o, c) in enumerate(cfg)), (0, 1, 3, 4, 6, 7, 8, 10, 11, 12, 14, 15, 16))


def test_rows_fit_their_budgets_and_the_ablation_keeps_to_its_levers():
    layout = _vgg_layout()
    sens = _sens(layout)
    rows = v2_curve.plan_rows(layout, sens, [2_000_000, 3_500_000], 2_000_000, [LayerSpec(3)] * 7 + [LayerSpec(1)] * 6)
    assert set(rows) == {"v2 2.0MB", "v2 3.5MB", "v1 3.5MB", "prune 2.0MB", "alpha 2.0MB", "paper"}  # v1 cannot reach 2 MB
    assert rows["paper"]["bytes"] == 3_914_104
    for key in ("v2 2.0MB", "v2 3.5MB", "v1 3.5MB", "prune 2.0MB"):
        assert rows[key]["reachable"] and rows[key]["bytes"] <= rows[key]["budget"], key
    assert "a" not in rows["prune 2.0MB"]["plan"] and "k" in rows["prune 2.0MB"]["plan"]
    # alpha alone: 1-bit masks and 4-bit alpha on every kernel is 13 bits a kernel, over 2 MB
    assert not rows["alpha 2.0MB"]["reachable"] and rows["alpha 2.0MB"]["bytes"] > 2_000_000
    assert "k" not in rows["alpha 2.0MB"]["plan"]
    assert "a" not in rows["v1 3.5MB"]["plan"] and "k" not in rows["v1 3.5MB"]["plan"]
    v2_only = v2_curve.plan_rows(layout, sens, [2_000_000, 3_500_000], None, None, v1=False)  # --no-v1
    assert set(v2_only) == {"v2 2.0MB", "v2 3.5MB"} and v2_only["v2 3.5MB"] == rows["v2 3.5MB"]


def test_the_section_names_the_planners_probe_when_it_is_not_the_default(monkeypatch):
    """By each chosen row's method, else the run's sensitivity's, else (rows from before either was
    recorded) the exact measurement; plans given by hand name none."""
    from chipq.reports import planner

    gain = "noise-gain:4img:4096pos:m1:seed0"
    chosen = {"rows": {"v2 2.0MB": {"variant": "v2"}, "plan x": {"variant": "given"}}}
    noise = {**chosen, "sensitivity": {"method": gain}}
    exact = {**chosen, "sensitivity": {"method": "exact"}}
    assert v2_curve._probe_flag({"sensitivity": None, "rows": {"plan x": {"variant": "given"}}}) == ""  # by hand only
    monkeypatch.setattr(planner, "PROBE", "exact")
    assert v2_curve._probe_flag(exact) == "" and v2_curve._probe_flag({**chosen, "sensitivity": None}) == ""
    assert v2_curve._probe_flag(noise) == " --probe noise-gain"
    monkeypatch.setattr(planner, "PROBE", "noise-gain")
    assert v2_curve._probe_flag(exact) == " --probe exact" and v2_curve._probe_flag(noise) == ""
    assert v2_curve._probe_flag({**chosen, "sensitivity": None}) == " --probe exact"  # chosen before methods were kept
    merged = {"sensitivity": {"method": gain}, "rows": {"a": {"variant": "v2", "method": "exact"}, "b": {"variant": "v1", "method": gain}}}
    assert v2_curve._probe_flag(merged) == " --probe exact"  # a merged row keeps the method it was chosen by

def test_quick_run_on_a_tiny_model(tiny_bench, bench_work, tmp_path, monkeypatch):
    """--quick end to end: the plan under the budget is compressed, its size checked, scored against
    float on a held-out set, the 512-bit and RNIP-9 rows filled, the plot and the section rendered."""
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("CHIPQ_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "v2_curve.json"
    result = v2_curve.main([
        "--quick", "--model", str(tiny_bench.model), "--images", str(tiny_bench.photos), "--eval", str(tiny_bench.samples),
        "--work", str(bench_work), "--out", str(out), "--budgets", "12kB", "--ablation", "12kB", "--input", "32x32",
        "--kinds-on", "heldout",
    ])  # fmt: skip
    assert json.loads(out.read_text())["rows"].keys() == result["rows"].keys()
    rows = result["rows"]
    assert {"v2 0.0MB", "prune 0.0MB", "alpha 0.0MB", "paper"} <= set(rows)
    chosen = rows["v2 0.0MB"]
    assert chosen["bytes"] <= 12_000 and chosen["reachable"]
    assert -1 <= chosen["cosine"] <= 1 and 0 <= chosen["map"] <= 1
    assert chosen["gap_to_float"]["low"] <= chosen["gap_to_float"]["gap"] <= chosen["gap_to_float"]["high"]
    kinds = chosen["descriptors"]
    assert set(kinds) == {"set", "nip", "rnip9"} and {"map_bit", "map_float"} <= set(kinds["rnip9"]["chip"])
    assert (tmp_path / "v2_curve.png").read_bytes()[:4] == b"\x89PNG"
    text = v2_curve.render(result)
    assert "## Chip format v2" in text and f"`{chosen['plan']}`" in text and "512-bit" in text
    assert "paper 3x7,1x6" in text


def test_plans_given_by_hand_are_rows_with_their_exact_bytes():
    layout = _vgg_layout()
    names = [c[0] for c in layout.convs]
    rows = v2_curve.given_rows(layout, names, ["3x7,1x6", "3x2,2a6x5,1a4k50x6"], None)
    assert rows["plan 3x7,1x6"]["bytes"] == 3_914_104 and rows["plan 3x2,2a6x5,1a4k50x6"]["bytes"] == 1_942_904
    assert all(row["variant"] == "given" and row["predicted_cosine"] is None for row in rows.values())
    with_sens = v2_curve.given_rows(layout, names, ["3x7,1x6", "1a5x13"], _sens(layout))
    assert with_sens["plan 3x7,1x6"]["predicted_cosine"] is not None
    assert with_sens["plan 1a5x13"]["predicted_cosine"] is None  # alpha 5 was not measured
    assert v2_curve._label("plan 3x7,1x6", rows["plan 3x7,1x6"]) == "plan given by hand"


def test_given_rows_are_plotted_and_rendered(tmp_path):
    pytest.importorskip("matplotlib")
    layout = _vgg_layout()
    rows = v2_curve.given_rows(layout, [c[0] for c in layout.convs], ["3x7,1x6"], None)
    rows["plan 3x7,1x6"].update(cosine=0.9, map=0.8)
    result = {"rows": rows, "float": {"map": 0.85}, "retrained": False, "heldout": "x", "fp32_weight_bytes": 58_844_928}
    assert v2_curve.plot(result, tmp_path / "c.png") and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert "| plan given by hand | `3x7,1x6` | 3,914,104 |" in v2_curve.render(result)


def test_kept_rows_are_put_together_without_measuring_again(tiny_bench, bench_work, tmp_path, monkeypatch):
    """A run keeps each row's blob and scores; a later --cached-only run takes the row from there
    (nothing compressed or scored again) and lists a row no run has measured as missing."""
    monkeypatch.setenv("CHIPQ_CACHE", str(tmp_path / "cache"))
    common = ["--quick", "--model", str(tiny_bench.model), "--images", str(tiny_bench.photos), "--eval",
              str(tiny_bench.samples), "--work", str(bench_work), "--input", "32x32", "--budgets", "", "--ablation", ""]  # fmt: skip
    first = v2_curve.main([*common, "--plans", "3x13", "--out", str(tmp_path / "a.json")])
    assert set(first["rows"]) == {"plan 3x13"} and first["missing"] == []

    def no_measuring(*args, **kwargs):
        raise AssertionError("a kept row was measured again")

    monkeypatch.setattr(v2_curve, "compress_row", no_measuring)
    monkeypatch.setattr(v2_curve, "score_row", no_measuring)
    together = v2_curve.main([*common, "--plans", "3x13;1x13", "--out", str(tmp_path / "b.json"), "--cached-only"])
    assert together["rows"]["plan 3x13"]["cosine"] == first["rows"]["plan 3x13"]["cosine"]
    assert together["rows"]["plan 3x13"]["map"] == first["rows"]["plan 3x13"]["map"]
    assert together["missing"] == ["plan 1x13"] and "plan 1x13" not in together["rows"]
    assert "Not measured yet (no kept blob and scores): plan 1x13." in v2_curve.render(together)


def test_a_blob_made_again_byte_for_byte_is_not_scored_again(tiny_bench, bench_work, tmp_path, monkeypatch):
    """Scores are kept by the blob's bytes: when the kept blob is gone (or other code makes it again)
    and the fresh compress writes the same bytes, --reuse takes the kept scores instead of scoring."""
    monkeypatch.setenv("CHIPQ_CACHE", str(tmp_path / "cache"))
    common = ["--quick", "--model", str(tiny_bench.model), "--images", str(tiny_bench.photos), "--eval",
              str(tiny_bench.samples), "--work", str(bench_work), "--input", "32x32", "--budgets", "", "--ablation", "",
              "--plans", "3x13"]  # fmt: skip
    first = v2_curve.main([*common, "--out", str(tmp_path / "a.json")])
    blob = first["rows"]["plan 3x13"]["blob"]
    kept = Path(blob).read_bytes()
    Path(blob).unlink()

    def no_scoring(*args, **kwargs):
        raise AssertionError("a blob of the same bytes was scored again")

    monkeypatch.setattr(v2_curve, "score_row", no_scoring)
    again = v2_curve.main([*common, "--out", str(tmp_path / "b.json"), "--reuse"])
    assert Path(blob).read_bytes() == kept  # compressed again, the same bytes
    assert again["rows"]["plan 3x13"]["cosine"] == first["rows"]["plan 3x13"]["cosine"]
    assert again["rows"]["plan 3x13"]["map"] == first["rows"]["plan 3x13"]["map"]


def test_targets_table_takes_the_time_from_a_quiet_memory_run_only(monkeypatch):
    from chipq import quant

    monkeypatch.setattr(quant, "PROBE", "exact")
    rows = {"v2 2.0MB": {"bytes": 1_998_544, "cosine": 0.96, "map": 0.9, "plan": "x", "variant": "v2", "budget": 2_000_000,
                         "reachable": True, "gap_to_float": {"gap": -0.001, "low": -0.01, "high": 0.01}}}  # fmt: skip
    result = {"rows": rows, "float": {"map": 0.9}, "retrained": True, "heldout": "x", "fp32_weight_bytes": 58_844_928}
    command = "compress MODEL --budget 2000000 -o b.blob"
    quiet = {"commands": [{"command": command, "wall_s": 238.0, "other_cpu_share": 0.02}]}
    busy = {"commands": [{"command": command, "wall_s": 500.0, "other_cpu_share": 0.6}]}
    assert [row[-1] for row in v2_curve.target_rows(result, quiet)] == ["yes", "yes", "yes", "yes"]
    assert v2_curve.target_rows(result, quiet)[3][2] == "4.0 min"
    assert v2_curve.target_rows(result, busy)[3][2:] == ["machine busy (60% other CPU)", "–"]
    assert v2_curve.target_rows(result)[3][2] == "not measured"
    assert "Issue 23's targets:" in v2_curve.render(result, quiet)
    assert v2_curve.target_rows({"rows": {}}) == []
    # the first run adds the sensitivity's first measurement: each CLI probe timed quietly on the planner's 16 photos
    stability = {"rows": {
        "exact": {"probe": "exact", "photos": 16, "seconds": 900.0, "other_cpu_share": 0.01},
        "gain": {"probe": "noise-gain", "photos": 16, "seconds": 30.0, "other_cpu_share": 0.01},
        "busy": {"probe": "noise-gain", "photos": 16, "seconds": 20.0, "other_cpu_share": 0.5},
        "four": {"probe": "exact", "photos": 4, "seconds": 400.0, "other_cpu_share": 0.01},
        "single": {"probe": "noise-gain-single", "photos": 16, "seconds": 200.0, "other_cpu_share": 0.01}}}  # fmt: skip
    assert len(v2_curve.target_rows(result, quiet, stability)) == 4  # no CPU named: times of two machines are not added
    quiet["commands"][0]["run"] = {"cpu": "cpu A"}
    assert len(v2_curve.target_rows(result, quiet, {**stability, "machine": {"cpu": "cpu B"}})) == 4
    stability["machine"] = {"cpu": "cpu A"}
    first = v2_curve.target_rows(result, quiet, stability)[4:6]
    assert [(row[2], row[3]) for row in first] == [("19.0 min", "no"), ("4.5 min", "yes")]
    assert "cached" in v2_curve.target_rows(result, quiet, stability)[3][0] and "--probe noise-gain" in first[1][0]
    monkeypatch.setattr(quant, "PROBE", "noise-gain")  # the default's first run is the one without --probe
    first = v2_curve.target_rows(result, quiet, stability)[4:6]
    assert "--probe exact" in first[0][0] and "--probe" not in first[1][0]


def test_descriptor_kinds_are_measured_on_ukbench_unless_asked(tmp_path):
    """By default as for 3x7,1x6 in the fidelity section (UKBench-56, its float descriptors cached);
    --kinds-on heldout: the held-out set, queries excluded."""
    import argparse

    args = argparse.Namespace(kinds_on="ukbench", ukbench=tmp_path / "u", eval=tmp_path / "e")
    default = v2_curve.kinds_set(args)
    assert (default.name, default.images, default.exclude_queries) == ("ukbench", tmp_path / "u" / "jpg", False)
    held = v2_curve.kinds_set(argparse.Namespace(**{**vars(args), "kinds_on": "heldout"}))
    assert (held.images, held.gt, held.exclude_queries) == (tmp_path / "e", tmp_path / "e" / "groundtruth.json", True)


def test_merge_keeps_an_earlier_runs_rows_each_naming_its_run(tmp_path):
    same = {"heldout": "h", "model": {"sha256": "m"}, "retrained": True}
    row = {"variant": "given", "budget": None, "reachable": True, "plan": "3x13", "bytes": 10, "cosine": 0.5, "map": 0.5}
    earlier = {**same, "rows": {"plan 3x13": row, "plan 1x13": {**row, "plan": "1x13"}},
               "provenance": {"command": "python bench/v2_curve.py --plans 3x13", "machine": {"date_utc": "d0"}}}  # fmt: skip
    path = tmp_path / "a.json"
    path.write_text(json.dumps(earlier))
    result = {**same, "rows": {"plan 1x13": {**row, "plan": "1x13", "cosine": 0.9}}, "missing": ["plan 3x13"]}
    v2_curve.merge(result, [path])
    assert list(result["rows"]) == ["plan 3x13", "plan 1x13"] and result["missing"] == []
    assert result["rows"]["plan 1x13"]["cosine"] == 0.9 and "run" not in result["rows"]["plan 1x13"]  # this run's wins
    assert result["rows"]["plan 3x13"]["run"] == {"command": "python bench/v2_curve.py --plans 3x13", "date_utc": "d0"}
    assert "Rows kept from earlier runs" in v2_curve.render({**result, "float": {"map": 0.9}, "fp32_weight_bytes": 1})
    with pytest.raises(SystemExit, match="another held-out set"):
        v2_curve.merge({**result, "heldout": "other"}, [path])


def test_out_that_is_a_merge_input_is_refused_before_any_work(tmp_path):
    """The result is written as rows are measured: an --out that is also a --merge input would lose
    the earlier rows before they are read."""
    earlier = tmp_path / "a.json"
    earlier.write_text("{}")
    with pytest.raises(SystemExit, match="is a --merge input"):
        v2_curve.main(["--merge", str(earlier), "--out", str(tmp_path / "." / "a.json")])
    assert earlier.read_text() == "{}"
