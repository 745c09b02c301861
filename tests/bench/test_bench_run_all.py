"""bench/run_all.py: runs the chosen benchmarks and writes the page from their JSON only."""

from __future__ import annotations

import argparse
import json

import pytest
import run_all


def test_run_all_writes_results_and_the_page(tiny_bench, bench_work, tmp_path):
    results, page = tmp_path / "results", tmp_path / "BENCHMARKS.md"
    run_all.main([
        "--only", "size", "--quick", "--model", str(tiny_bench.model), "--work", str(bench_work),
        "--results", str(results), "--page", str(page), "--chip-size", "32x32", "--calib", str(tiny_bench.photos),
    ])  # fmt: skip
    size = json.loads((results / "size.json").read_text())
    assert [row["plan"] for row in size["plans"]] == ["3x7,1x6"]
    text = page.read_text()
    assert text.startswith("# Benchmarks") and "## Size" in text and f"{size['plans'][0]['blob_bytes']:,}" in text
    assert size["machine"]["cpu"] in text


def test_report_only_regenerates_from_json(tmp_path):
    machine = {"cpu": "X", "cores": 2, "memory_gib": 1.0, "python": "3", "numpy": "n", "torch": "t",
               "onnxruntime": "o", "date_utc": "today"}  # fmt: skip
    engines = {name: {"times_ms": [2.0 * r], "median_ms": 2.0 * r, "ms_per_image": 2.0 * r, "images_per_s": 1.0,
                      "ratio_to_int8": r, "cosine_to_float": 1.0}
               for name, r in (("chipq_fast", 2.5), ("ort_float", 4.0), ("ort_int8_qdq", 1.0))}  # fmt: skip
    threads = {"torch_intra_op": 2, "ort_intra_op": 2, "ort_inter_op": 1}
    speed = {"machine": machine, "image": "a.jpg", "threads": threads,
             "method": {"repeats": 5, "golden_repeats": 1},
             "settings": [{"key": "chip_1", "label": "224x224, one view", "batch": 1, "int8_reference": "ort_int8_qdq",
                           "other_cpu_share": 0.4, "engines": engines}]}  # fmt: skip
    (tmp_path / "speed.json").write_text(json.dumps(speed))
    page = tmp_path / "B.md"
    run_all.main(["--report-only", "--results", str(tmp_path), "--page", str(page)])
    text = page.read_text()
    assert "**2.50x** the time of onnxruntime int8 (QDQ) — it misses the target" in text
    assert "onnxruntime float32 takes 4.00x" in text
    assert "**Contention:** other processes used up to 40%" in text


def test_unknown_benchmark_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        run_all.main(["--only", "sizes", "--results", str(tmp_path)])


def test_retrain_step_runs_bench_retrain_py_in_a_child(tiny_bench, bench_work, tmp_path, monkeypatch):
    """The retrain step is bench/retrain.py in a child: a stand-in script records the arguments it gets."""
    fake = tmp_path / "fake_retrain.py"
    fake.write_text(
        "import json, sys, pathlib\n"
        "args = dict(zip(sys.argv[1::2], sys.argv[2::2]))\n"
        "curve = [{'minutes': 1.0, 'step': 3, 'map_float': 0.5}]\n"
        "out = {'argv': sys.argv[1:], 'steps': 3, 'train_seconds': 60.0, 'curve': curve}\n"
        "pathlib.Path(args['--out']).write_text(json.dumps(out))\n"
    )
    monkeypatch.setattr(run_all, "RETRAIN_SCRIPT", fake)
    args = argparse.Namespace(model=tiny_bench.model, work=bench_work, quick=True)
    (tmp_path / "results").mkdir()
    out = run_all.run_retrain(args, tmp_path / "results")
    argv = json.loads(out.read_text())["argv"]
    assert argv[:2] == ["--model", str(tiny_bench.model)] and argv[argv.index("--minutes") + 1] == "1"
    assert argv[argv.index("--work") + 1] == str(bench_work / "quick" / "retrain")  # a quick blob kept apart
    text = "\n".join(run_all.retrain_section(json.loads(out.read_text())))
    assert "| 1.0 | 3 | 0.5000 |" in text and "3 steps in 1.0 minutes of training" in text
