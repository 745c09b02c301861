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


def _quick_args(tiny_bench, work):
    return argparse.Namespace(model=tiny_bench.model, work=work, quick=True, calib=tiny_bench.photos,
                              ukbench=tiny_bench.ukbench, eval=None)  # fmt: skip


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
    (tmp_path / "results").mkdir()
    out = run_all.run_retrain(_quick_args(tiny_bench, bench_work), tmp_path / "results")
    argv = json.loads(out.read_text())["argv"]
    assert argv[:2] == ["--model", str(tiny_bench.model)] and argv[argv.index("--minutes") + 1] == "0.1"
    assert argv[argv.index("--work") + 1] == str(bench_work / "quick" / "retrain")  # a quick blob kept apart
    text = "\n".join(run_all.retrain_section(json.loads(out.read_text())))
    assert "| 1.0 | 3 | 0.5000 |" in text and "3 steps in 1.0 minutes of training" in text


def test_every_bench_script_is_in_the_suite():
    """Every script of bench/ is a benchmark run_all runs, or one of its named helpers; none is left over."""
    scripts = {path.name for path in run_all.BENCH.glob("*.py")}
    listed = {bench.script for bench in run_all.BENCHMARKS}
    assert scripts == listed | set(run_all.HELPERS), scripts ^ (listed | set(run_all.HELPERS))
    assert len(listed) == len(run_all.BENCHMARKS) and not listed & set(run_all.HELPERS)
    assert not (run_all.BENCH / "explore_exact_conv.py").exists()


def test_every_result_file_is_made_by_a_listed_benchmark():
    made = {file for bench in run_all.BENCHMARKS for file in bench.results}
    present = {path.name for path in (run_all.BENCH / "results").iterdir() if not path.name.startswith(".")}
    assert present <= made, present - made


def test_no_bench_script_defaults_to_a_machine_path():
    for path in run_all.BENCH.glob("*.py"):
        text = path.read_text()
        for machine_path in ("/work/", "/tmp/lead", "/tmp/chipq-bench", "shared_sets"):
            assert machine_path not in text, f"{path.name}: {machine_path}"


def test_every_child_benchmark_gets_small_settings_with_quick(tiny_bench, bench_work, tmp_path):
    """--quick changes the command line of every child benchmark, and never writes into bench/results."""
    args = _quick_args(tiny_bench, bench_work)
    args.eval = tmp_path / "evalset"  # a given held-out set: nothing is built
    for bench in run_all.BENCHMARKS:
        if not bench.child:
            continue
        quick = run_all.child_argv(bench.name, args, tmp_path)
        args.quick = False
        full = run_all.child_argv(bench.name, args, tmp_path)
        args.quick = True
        assert quick != full or bench.name == "evalset", bench.name
        assert str(run_all.BENCH / "results") not in " ".join(quick)


def test_a_default_run_gives_children_their_own_defaults():
    """Without options the children run as `python bench/NAME.py`: the command a section records is short."""
    args = argparse.Namespace(model=None, work=run_all.cm.DEFAULT_WORK, quick=False, calib=None,
                              ukbench=run_all.cm.UKBENCH, eval=None)  # fmt: skip
    argv = {b.name: run_all.child_argv(b.name, args, run_all.cm.RESULTS_DIR) for b in run_all.BENCHMARKS if b.child}
    assert argv == {name: (["measure"] if name == "evalset" else []) for name in argv}


def test_stale_results_are_marked_with_the_command_that_remakes_them():
    old = {"machine": {"cpu": "X", "cores": 2, "date_utc": "2026-11-22 01:56 UTC"}}
    line, stale = run_all.provenance(old, "size.json", "size")
    assert stale and "2026-11-22 01:56 UTC, X, 2 cores; command not recorded" in line
    new = run_all.cm.stamped({}, "python bench/run_all.py --only size")
    line, stale = run_all.provenance(new, "size.json", "size")
    assert not stale and "command: `python bench/run_all.py --only size`" in line
    text = run_all.with_provenance("## Size\n\nbody", "size", {"size.json": old})
    assert text.startswith("## Size\n\n- `bench/results/size.json`") and "rerun `python bench/run_all.py --only size`" in text


@pytest.mark.slow
def test_quick_runs_every_benchmark(tiny_bench, tmp_path):
    """`run_all.py --quick` on the tiny model: every benchmark runs and has a section on the page."""
    results, page = tmp_path / "results", tmp_path / "BENCHMARKS.md"
    run_all.main([
        "--quick", "--model", str(tiny_bench.model), "--work", str(tmp_path / "work"), "--results", str(results),
        "--page", str(page), "--chip-size", "32x32", "--large-size", "64x48", "--photos", str(tiny_bench.photos),
        "--calib", str(tiny_bench.photos), "--ukbench", str(tiny_bench.ukbench), "--samples", str(tiny_bench.samples),
    ])  # fmt: skip
    for bench in run_all.BENCHMARKS:  # every result file it lists (a picture needs matplotlib; a "before" is old code's)
        for name in bench.results:
            assert (results / name).is_file() or name.endswith((".png", "_before.json")), (bench.name, name)
    text = page.read_text()
    assert "Stale" not in text and "Not measured yet" not in text
    for bench in run_all.BENCHMARKS:  # every file's line names the command that made it
        assert f"`bench/results/{bench.results[0]}`: " in text and "command: `python bench/" in text, bench.name
