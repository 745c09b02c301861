"""bench/cost.py on a tiny VGG-16: each task runs in its own process and reports its peak memory."""

from __future__ import annotations

import cost


def test_compress_and_retrain_step_run_in_children(tiny_bench, bench_work):
    result = cost.run(tiny_bench.model, None, bench_work, tiny_bench.photos, tiny_bench.photos, tiny_bench.chip_hw,
                      repeats=1, tasks=("compress", "retrain_step"), retrain_samples=8, retrain_steps=2)  # fmt: skip
    tasks = {row["task"]: row for row in result["tasks"]}
    assert all("error" not in row for row in tasks.values()), tasks
    assert tasks["compress"]["blob_bytes"] > 0 and tasks["compress"]["calib_images"] == 3
    assert tasks["retrain_step"]["extra"]["trained_layers"][-1] == "conv5_3"
    assert len(tasks["retrain_step"]["extra"]["step_times_s"]) == 2
    assert all(row["peak_rss_mib"] > 50 for row in tasks.values())  # at least the interpreter and torch
    page = cost.render(result)
    assert "s / step" in page and "MiB" in page


def test_a_failed_child_becomes_a_todo_row():
    row = cost.summarize("retrain_step", [{"error": "exit 1: ImportError: no Retrainer"}])
    result = {"settings": {"plan": "3x7,1x6", "threads": 2, "chip_hw": [224, 224]}, "tasks": [row]}
    assert "TODO: exit 1: ImportError: no Retrainer" in cost.render(result)


def test_summarize_takes_medians():
    row = cost.summarize("load", [{"load_s": 1.0, "peak_rss_mib": 10}, {"load_s": 3.0, "peak_rss_mib": 30},
                                  {"load_s": 2.0, "peak_rss_mib": 20}])  # fmt: skip
    assert row["load_s"] == 2.0 and row["peak_rss_mib"] == 20 and row["repeats"] == 3
