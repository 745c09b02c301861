"""bench/plan.py's report: the paired mAP comparison with the paper's plan and the table it renders."""

from __future__ import annotations

import plan as plan_bench
import pytest
from recipe_eval import paired_gap


def test_paired_gap_interval_contains_the_gap_and_excludes_zero_for_a_clear_win():
    worse = [0.5] * 50 + [1.0] * 50
    better = [1.0] * 100
    gap = paired_gap(better, worse)
    assert gap["gap"] == pytest.approx(0.25) and gap["queries"] == 100
    assert 0 < gap["low"] < 0.25 < gap["high"]
    noisy = paired_gap([1.0, 0.0] * 50, [0.0, 1.0] * 50)  # as many wins as losses
    assert noisy["low"] < 0 < noisy["high"]


def _row(plan, ap, cosine):
    return {"plan": plan, "bytes": 100, "fits_budget": True, "predicted_cosine": cosine - 0.05, "predicted_sqnr_db": 1.0,
            "compress_s": 1.0, "map": sum(ap) / len(ap), "cosine": cosine, "ap": ap}  # fmt: skip


def test_render_shows_the_gap_to_the_paper_plan_per_row():
    paper = [1.0] * 8 + [0.5] * 2
    chosen = [1.0] * 9 + [0.5]
    result = {
        "rows": {"float": {"plan": "float", "map": 0.9, "cosine": 1.0, "ap": [0.9] * 10},
                 "chosen": _row("4x1,2x12", chosen, 0.93), "paper": _row("3x7,1x6", paper, 0.92)},
        "sensitivity": {"layers": ["a", "b"], "cosine": [[0.9, 0.95, 0.97, 0.98, 0.99]] * 2, "reference_cosine": 0.999,
                        "v2": [{}, {"1a5": 0.85, "1k40": 0.8}]},
        "sensitivity_images": 4, "sensitivity_views": 4, "sensitivity_kind": "reconstructed", "sensitivity_first_image": 32,
        "calibration_images": 64, "sensitivity_cached": True, "heldout": "eval (10 images, 10 queries)",
        "budget": 100, "front_at": {"4MB": {}}, "seconds": {},
    }  # fmt: skip
    text = plan_bench.render(result)
    assert "Reconstructed sensitivity on calibration photos 33-36" in text
    chosen_line = next(line for line in text.splitlines() if "found by chipq plan" in line)
    assert "+0.0500 (" in chosen_line  # 0.95 - 0.90
    paper_line = next(line for line in text.splitlines() if "paper 3x7,1x6" in line)
    assert "(" not in paper_line.split("|")[9]  # the paper against itself: no interval
    assert "No plan fits 2MB, 3MB, 5MB, 7MB" in text
    header = next(line for line in text.splitlines() if line.startswith("| layer"))
    cells = lambda line: [c.strip() for c in line.split("|")[1:-1]]  # noqa: E731
    assert cells(header)[-3:] == ["m=5", "1a5", "1k40"]  # the v2 settings after m = 1..5
    a_row, b_row = (next(line for line in text.splitlines() if line.startswith(f"| {n} |")) for n in "ab")
    assert cells(a_row)[-2:] == ["", ""] and cells(b_row)[-2:] == ["0.8500", "0.8000"]


def test_plan_stability_render_has_a_row_per_setting_the_gap_to_the_reference_and_only_quiet_times(monkeypatch):
    """Each row against the first (the reference); the default's mark follows the default probe's
    method, not the label an earlier run stored."""
    import plan_stability

    from chipq.quant import sensitivity

    monkeypatch.setattr(sensitivity, "DEFAULT_PROBE", sensitivity.NOISE_GAIN)
    default = [1.0] * 8 + [0.5] * 2
    result = {
        "measured": "2026-12-01 20:00", "budget": 100, "heldout": "eval (10 images, 10 queries)", "float_map": 0.9,
        "calibrate_s": 12.0,
        "rows": {"exact": {**_row("5x1,1k50x12", default, 0.92), "label": "exact, photos 33-48 (the default)",
                           "probe": "exact", "method": "exact", "photos": 16, "seconds": 900.0, "other_cpu_share": 0.01, "reference_predicted": 0.87},
                 "gain": {**_row("4x1,2x12", [1.0] * 10, 0.93), "label": "noise gain (--probe noise-gain)", "probe": "noise-gain",
                          "method": sensitivity.NOISE_GAIN.name(), "photos": 16, "seconds": 200.0, "other_cpu_share": 0.02, "reference_predicted": 0.86},
                 "busy": {**_row("4x1,2x12", [1.0] * 10, 0.93), "label": "exact, busy", "seconds": 500.0,
                          "other_cpu_share": 0.5, "reference_predicted": 0.86}},
    }  # fmt: skip
    text = plan_stability.render(result)
    row = next(line for line in text.splitlines() if "| noise gain (the default) |" in line)
    assert "`4x1,2x12`" in row and "| 200 |" in row and "+0.1000 (" in row and "| 0.8600 |" in row
    reference = next(line for line in text.splitlines() if "| exact, photos 33-48 (the reference) |" in line)
    assert "| 900 |" in reference and "(" not in reference.split("|")[-2]  # the default against itself: no interval
    assert "| busy |" in next(line for line in text.splitlines() if "exact, busy" in line)
