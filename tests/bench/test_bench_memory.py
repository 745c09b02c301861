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
