"""bench/memory.py's page section: peaks always, times only when the machine was ours."""

from __future__ import annotations

import doctest

import memory


def test_doctests():
    assert doctest.testmod(memory).failed == 0


def row(command, share):
    return {"command": command, "argv": [], "peak_mb": 1000.0, "cpu_s": 381.0, "wall_s": 219.6,
            "other_cpu_share": share, "stages": {}, "code": 0}  # fmt: skip


def test_times_are_shown_only_for_commands_run_alone():
    data = {"model": "vgg16.pt", "commands": [row("quiet", 0.02), row("shared", 0.4), row("old", None)]}
    lines = {line.split("|")[1].strip(): line for line in memory.render(data).splitlines() if line.startswith("| `")}
    assert "| 220 | 381 |" in lines["`quiet`"]
    assert "| busy | busy |" in lines["`shared`"]
    assert "| – | – |" in lines["`old`"]


def test_before_run_shows_its_peak_and_its_wall_time_where_it_ran_alone():
    before = {"label": "old code", "machine": {"cpu": "AMD", "date_utc": "2026-12-07 09:00 UTC"},
              "commands": [{**row("a", 0.01), "peak_mb": 9000.0, "wall_s": 305.0}, {**row("b", 0.5), "peak_mb": 4000.0}]}  # fmt: skip
    data = {"model": "vgg16.pt", "commands": [row("a", 0.02), row("b", 0.02), row("c", 0.02)]}
    text = memory.render(data, before)
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `")}
    assert "| wall (s) | before wall (s) | CPU (s) |" in text
    assert "| 1,000 | 9,000 | 220 | 305 | 381 |" in lines["`a`"]
    assert "| 1,000 | 4,000 | 220 | busy | 381 |" in lines["`b`"]  # the before run shared the machine
    assert "| 1,000 | – | 220 | – | 381 |" in lines["`c`"]
    assert "Before: `old code`, AMD, 2026-12-07 09:00 UTC." in text
    # a before run without recorded times adds no time column
    untimed = {"commands": [{**row("a", None), "peak_mb": 9000.0}]}
    assert "before wall" not in memory.render(data, untimed)


def test_a_remark_is_shown_without_marking_the_row_as_stopped():
    data = {"model": "vgg16.pt", "commands": [{**row("a", 0.0), "remark": "timed beside the old code"},
                                              {**row("b", 0.0), "note": "stopped by hand"}]}  # fmt: skip
    text = memory.render(data)
    assert "- `a`: timed beside the old code" in text and "- `b`: stopped by hand" in text
    assert "Not run to the end (the peak is a lower bound): b." in text


def test_merge_keeps_earlier_rows_and_names_their_runs(tmp_path):
    import json

    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"label": "old", "machine": {"date_utc": "2026-12-01 10:00 UTC", "cpu": "Intel"},
                                   "commands": [row("kept", 0.0), row("remeasured", 0.0)]}))  # fmt: skip
    rows = memory.merged_rows(earlier)
    assert [r["run"] for r in rows] == [{"label": "old", "date_utc": "2026-12-01 10:00 UTC", "cpu": "Intel"}] * 2
    new = {**row("remeasured", 0.0), "run": {"label": "new", "date_utc": "2026-12-06 15:00 UTC"}}
    text = memory.render({"model": "vgg16.pt", "commands": [rows[0], new]})
    # each row names its run and, where recorded, the CPU: times of two machines are not one table's
    assert "- `kept`: old, 2026-12-01 10:00 UTC, Intel" in text and "- `remeasured`: new, 2026-12-06 15:00 UTC\n" in text + "\n"
    assert "different runs" not in memory.render({"model": "vgg16.pt", "commands": rows})


def test_only_picks_commands_by_label_prefix(tmp_path, monkeypatch):
    import argparse

    monkeypatch.setattr(memory, "photo_640", lambda source, out: out)
    monkeypatch.setattr(memory, "descriptor_files", lambda folder, count: (folder / "a", folder / "b", folder / "c"))
    args = argparse.Namespace(model="m.pt", quick=True, calib=tmp_path, descriptors=10, plan_images=2, skip=set(),
                              only=["compress --budget", "search"])  # fmt: skip
    labels = [label for label, _ in memory.commands(args, tmp_path, tmp_path / "b.blob")]
    assert labels == ["compress --budget 25x (format v2, retraining)", "search, 10 descriptors"]
