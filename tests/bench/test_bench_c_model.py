"""bench/c_model.py on the sample blob: builds chipq_ref, times the three executors, checks equality."""

from __future__ import annotations

import json

import c_model
import run_all
from helpers import SAMPLE_BLOB


def test_c_model_bench_runs_and_renders(tiny_bench, tmp_path):
    result = c_model.run(blob=SAMPLE_BLOB, work=tmp_path / "work", photos=tiny_bench.photos, repeats=2)
    assert result["c_model_equal_to_golden"] and result["fast_equal_to_golden"]
    assert set(result["engines"]) == {"c_model", "chipq_golden", "chipq_fast"}
    assert result["input_hw"] == [32, 32] and result["layers"] == 3
    for row in result["engines"].values():
        assert row["seconds"] > 0 and row["ratio_to_golden"] > 0
    assert result["engines"]["c_model"]["runs"] == 2
    text = c_model.render(result)
    assert text.startswith("## C reference model") and "equal to golden on every element of every layer: yes" in text
    (tmp_path / "c_model.json").write_text(json.dumps(result))
    page = tmp_path / "B.md"
    run_all.main(["--report-only", "--results", str(tmp_path), "--page", str(page)])
    assert "## C reference model" in page.read_text()
