"""Every benchmark in one command, and BENCHMARKS.md regenerated from their results.

    .venv/bin/python bench/run_all.py                      # everything (many hours on 2 cores)
    .venv/bin/python bench/run_all.py --only size,speed    # some of them
    .venv/bin/python bench/run_all.py --quick              # every one on small settings, results in <work>/quick
    .venv/bin/python bench/run_all.py --report-only        # only rewrite BENCHMARKS.md
    .venv/bin/python bench/run_all.py --list               # the benchmarks, their scripts and result files

`BENCHMARKS` lists every benchmark script of bench/ (a test checks that none is missing), in the
order they run: speed early so nothing of ours competes with its timings; retrain (which leaves a
retrained blob in ``<work>/retrain``) before fidelity, which scores it unless ``--retrained`` names
one. size, speed, fidelity, cost and c_model run in this process; the others are their own script run
as a child with the settings of this command line (`child_argv`).

Inputs, with no machine path: the float model is the real VGG-16 as `chipq fetch-vgg16` fetches it,
kept in its cache (``$CHIPQ_CACHE/vgg16``, else ``~/.cache/chipq/vgg16``) unless ``--model`` names
one; photos come from the checkout (samples/, the shipped calibration set, bench/evalset/); UKBench-56
from the shared data beside the checkout (``../shared/data/ukbench56``, ``$CHIPQ_BENCH_SHARED``).

Every result file is stamped with the suite number, the command and the machine
(`common.stamped`); each page section states them, and marks results made before this suite
(no stamp, or an older suite number) stale, with the command that remakes them.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import c_model
import common as cm
import cost
import fidelity
import size
import speed

BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its --only name, its script in bench/, the result files it writes."""

    name: str
    script: str
    results: tuple[str, ...]  # file names in the results folder
    child: bool  # run as its own script in a child process (else in this process, `run_one`)


BENCHMARKS = (
    Benchmark("size", "size.py", ("size.json",), child=False),
    Benchmark("speed", "speed.py", ("speed.json",), child=False),
    Benchmark("retrain", "retrain.py", ("retrain.json",), child=True),
    Benchmark("fidelity", "fidelity.py", ("fidelity.json",), child=False),
    Benchmark("cost", "cost.py", ("cost.json",), child=False),
    Benchmark("c_model", "c_model.py", ("c_model.json",), child=False),
    Benchmark("scale", "scale.py", ("scale.json",), child=True),
    Benchmark("memory", "memory.py", ("memory.json", "memory_before.json"), child=True),
    Benchmark("evalset", "evalset.py", ("evalset.json",), child=True),
    Benchmark("plan", "plan.py", ("plan.json", "plan_front.png"), child=True),
    Benchmark("plan_stability", "plan_stability.py", ("plan_stability.json",), child=True),
    Benchmark("recipe", "recipe.py", ("recipe.json", "recipe_longer.json", "recipe_curve.png"), child=True),
    Benchmark("reconstruct_sweep", "reconstruct_sweep.py", ("reconstruct_sweep.json",), child=True),
    Benchmark("retrain_sweep", "retrain_sweep.py", ("retrain_sweep.json",), child=True),
    Benchmark("v2_curve", "v2_curve.py", ("v2_curve.json", "v2_curve.png"), child=True),
    Benchmark("structured", "structured.py", ("structured.json",), child=True),
)
NAMES = tuple(b.name for b in BENCHMARKS)  # the order they run in
BY_NAME = {b.name: b for b in BENCHMARKS}
HELPERS = ("common.py", "recipe_eval.py", "run_all.py")  # bench/ modules that are not benchmarks
RENDER = {"size": size.render, "speed": speed.render, "fidelity": fidelity.render, "cost": cost.render,
          "c_model": c_model.render}  # fmt: skip
RETRAIN_SCRIPT = BENCH / "retrain.py"
RETRAINED_BLOB = "retrained.blob"  # what bench/retrain.py leaves in its --work folder
CONTENTION = 0.10  # other processes' CPU share above which a timing is flagged
QUICK_EVAL_PHOTOS = 3  # --quick: the evaluation set keeps this many committed photos (and their edits)


def run_one(name: str, args: argparse.Namespace) -> dict:
    """Run one benchmark with the command line's settings (smaller ones with --quick)."""
    quick, chip, large = args.quick, cm.parse_hw(args.chip_size), cm.parse_hw(args.large_size)
    if name == "size":
        return size.run(args.model, (cm.MAIN_PLAN,) if quick else cm.PLANS, args.work, args.calib, chip)
    if name == "speed":
        return speed.run(
            args.model, args.blob, args.work, args.photos, chip, large, repeats=2 if quick else args.repeats,
            engines=tuple(e for e in speed.ENGINES if not (quick and e == "chipq_golden")),
            settings=("chip_1", "chip_nip4") if quick else None,
        )  # fmt: skip
    if name == "fidelity":
        retrained = args.retrained
        if retrained is None and (retrain_dir(args) / RETRAINED_BLOB).is_file():
            retrained = retrain_dir(args) / RETRAINED_BLOB  # left by the retrain step
        return fidelity.run(
            args.model, args.blob, retrained, args.work, "ukbench:nip" if quick else args.configs,
            chip, large, args.ukbench, args.samples, random_floor=not quick, limit=8 if quick else None,
        )  # fmt: skip
    if name == "cost":
        tasks = ("load", "compress", "extract_nip") if quick else cost.TASKS
        return cost.run(args.model, args.blob, args.work, args.photos, args.calib, chip,
                        repeats=1 if quick else args.cost_repeats, tasks=tasks)  # fmt: skip
    if name == "c_model":
        return c_model.run(args.model, args.blob, args.work, args.photos, chip, repeats=2 if quick else args.repeats)
    raise ValueError(f"unknown benchmark {name!r}")


def work_dir(args: argparse.Namespace) -> Path:
    """The children's work folder: a --quick run keeps its files apart."""
    return Path(args.work) / ("quick" if args.quick else "")


def retrain_dir(args: argparse.Namespace) -> Path:
    """bench/retrain.py's work folder: a --quick run keeps its short-trained blob apart."""
    return work_dir(args) / "retrain"


def eval_dir(args: argparse.Namespace) -> Path:
    """The held-out set of bench/evalset.py the children score on: ``--eval``, else built once into
    the work folder (with --quick from the first `QUICK_EVAL_PHOTOS` committed photos only)."""
    if getattr(args, "eval", None) is not None:
        return Path(args.eval)
    if not args.quick:
        return cm.eval_set(work_dir(args), args.ukbench)
    import evalset

    out = work_dir(args) / "evalset"
    if not (out / "groundtruth.json").is_file():
        evalset.build(out, None, limit=QUICK_EVAL_PHOTOS)
    return out


def _given(flag: str, value: object, default: object) -> list[str]:
    """``[flag, value]`` when `value` is not the script's own default (so the recorded command stays short)."""
    return [] if value is None or Path(str(value)) == Path(str(default)) else [flag, str(value)]


def child_argv(name: str, args: argparse.Namespace, results_dir: Path) -> list[str]:
    """The command line of a child benchmark's script: this run's inputs where they differ from the
    script's defaults, and small settings with --quick."""
    quick = args.quick
    model = _given("--model", args.model, None)
    work = _given("--work", work_dir(args), cm.DEFAULT_WORK)
    results = _given("--results", results_dir, cm.RESULTS_DIR)
    out = lambda file: _given("--out", Path(results_dir) / file, cm.RESULTS_DIR / file)  # noqa: E731
    train = _given("--train", args.calib, None)
    if name == "retrain":
        argv = [*model, *_given("--work", retrain_dir(args), cm.DEFAULT_WORK / "retrain"), *out("retrain.json"),
                *_given("--eval", args.ukbench, cm.UKBENCH), *train]  # fmt: skip
        # --quick: a tenth of a minute shows the curve is made (a whole minute was a sixth of CI's longest test)
        return argv + (["--minutes", "0.1", "--points", "0.1", "--samples", "16"] if quick else [])
    if name == "scale":
        argv = [*model, *work, *results, *_given("--ukbench", args.ukbench, cm.UKBENCH)]
        return argv + (["--crops", "20", "--distractors", "200"] if quick else [])
    if name == "memory":
        argv = [*model, *work, *out("memory.json"), *_given("--calib", args.calib, None)]
        return argv + (["--quick"] if quick else [])
    # the held-out set: built once here for a quick run or when named; else each script builds the default
    named = getattr(args, "eval", None) is not None or Path(args.ukbench) != cm.UKBENCH
    held_out = ["--eval", str(eval_dir(args))] if quick or named else []
    if name == "evalset":
        return ["measure", *model, *work, *_given("-o", Path(results_dir) / "evalset.json", cm.RESULTS_DIR / "evalset.json"), *held_out]
    if name == "plan":
        import plan as plan_bench

        fronts = ",".join(f"front {key}" for key in plan_bench.FRONT_AT)
        return [*model, *work, *results, *held_out] + (["--sens-images", "2", "--skip", fronts] if quick else [])
    if name == "plan_stability":
        return [*model, *work, *results, *held_out] + (["--settings", "1"] if quick else [])
    if name == "recipe":
        argv = [*model, *_given("--work", work_dir(args) / "recipe", cm.DEFAULT_WORK / "recipe"), *out("recipe.json"),
                *_given("--longer-out", Path(results_dir) / "recipe_longer.json", cm.RESULTS_DIR / "recipe_longer.json"), *held_out, *train]  # fmt: skip
        return argv + (["--steps", "2", "--longer", "3", "--points", "0,2", "--samples", "16", "--skip-ablation"] if quick else [])
    if name == "reconstruct_sweep":
        argv = [*model, *work, *out("reconstruct_sweep.json"), *held_out]
        return argv + (['{"images": 4}', "--every", "2"] if quick else [])
    if name == "retrain_sweep":
        argv = [*model, *work, *out("retrain_sweep.json"), *held_out, *train]
        return argv + (["--settings", '{"steps": 2, "samples": 16, "init_images": 4}'] if quick else [])
    if name == "structured":
        return [*model, *out("structured.json")] + (["--pairs", "conv4_2", "--shares", "0.5"] if quick else [])
    if name == "v2_curve":
        argv = [*model, *work, *out("v2_curve.json"), *held_out, *_given("--images", args.calib, None),
                *_given("--input", getattr(args, "chip_size", None), "224x224"), *_given("--ukbench", args.ukbench, cm.UKBENCH)]  # fmt: skip
        return argv + (["--quick"] if quick else [])
    raise ValueError(f"{name!r} is not a child benchmark")


def run_child(name: str, args: argparse.Namespace, results_dir: Path) -> Path:
    """Run a benchmark's own script in a child process (its result file is what it writes)."""
    script = RETRAIN_SCRIPT if name == "retrain" else BENCH / BY_NAME[name].script
    subprocess.run([sys.executable, str(script), *child_argv(name, args, results_dir)], check=True)
    return Path(results_dir) / BY_NAME[name].results[0]


def run_retrain(args: argparse.Namespace, results_dir: Path) -> Path:
    """bench/retrain.py (another script, with its own JSON) in a child process; --quick shortens it."""
    return run_child("retrain", args, results_dir)


# --- the page -------------------------------------------------------------------------------------


def provenance(data: dict, file: str, name: str) -> tuple[str, bool]:
    """One line for a results file: when, on what machine and by which command it was made, and
    whether it is stale (made before this suite: no stamp, or an older suite number)."""
    stamp = data.get("provenance") or {}
    machine = stamp.get("machine") or data.get("machine") or {}
    when = machine.get("date_utc") or data.get("measured") or "date not recorded"
    where = f"{machine['cpu']}, {machine.get('cores', '?')} cores" if machine.get("cpu") else "machine not recorded"
    command = f"command: `{stamp['command']}`" if stamp.get("command") else "command not recorded"
    stale = stamp.get("suite", 0) < cm.SUITE
    return f"`bench/results/{file}`: {when}, {where}; {command}", stale


def provenance_block(name: str, files: dict[str, dict]) -> list[str]:
    """The lines under a section's heading: where its numbers come from, and a stale mark."""
    lines, stale = [], False
    for file, data in files.items():
        line, old = provenance(data, file, name)
        lines.append(f"- {line}")
        stale |= old
    if stale:
        lines += ["", f"**Stale:** measured on older code, before the benchmark suite of this release; rerun "
                      f"`python bench/run_all.py --only {name}`."]  # fmt: skip
    return ["", *lines]


def with_provenance(section: str, name: str, files: dict[str, dict], extra: list[str] | None = None) -> str:
    """`section` (a ``## `` heading and its body) with the provenance block after the heading."""
    heading, _, body = section.partition("\n")
    extra = ["", *extra] if extra else []
    return "\n".join([heading, *provenance_block(name, files), *extra, body.rstrip("\n")])


def contention_notes(results: dict[str, dict]) -> list[str]:
    timed = results.get("speed", {}).get("settings", [])
    busy = [s for s in timed if (s.get("other_cpu_share") or 0) > CONTENTION]
    if not busy:
        return []
    worst = max(s["other_cpu_share"] for s in busy)
    return [
        f"**Contention:** other processes used up to {worst:.0%} of the CPU during {len(busy)} of the "
        f"{len(timed)} speed settings; those timings are slower than an idle machine would give. "
        "The ratios are less affected (every engine ran interleaved under the same load).",
        "",
    ]


def speed_summary(result: dict) -> list[str]:
    """The issue's target, with the measured ratio, stated up front."""
    head = speed.headline(result)
    if "chipq_fast" not in head:
        return []
    verdict = "meets" if head["chipq_fast"] <= 1.5 else "misses"
    where = next(s["label"] for s in result["settings"] if s["key"] == speed.GOLDEN_SETTING)
    lines = [
        f"**Target (issue 4): the fast executor within 1.5x of onnxruntime int8.** Measured at "
        f"{where}: **{head['chipq_fast']:.2f}x** the time of onnxruntime int8 "
        f"({speed.LABELS[head['int8_reference']].split(', ')[-1]}) — it {verdict} the target.",
    ]
    if "ort_float" in head:
        lines[0] += f" onnxruntime float32 takes {head['ort_float']:.2f}x the int8 time."
    work = result.get("chipq_int8_work")
    if work and verdict == "misses":
        lines[0] += (
            f" The floor for an exact int8 engine on this blob is about {work['int8_products_per_mac']:.2f}x "
            "(int8 multiplies per multiply-add, Speed section): the 12-bit weights of conv1-conv3 need two "
            "int8 products each, onnxruntime's 8-bit weights one."
        )
    return lines + [""]


def retrain_section(data: dict | None) -> list[str]:
    """A summary of bench/results/retrain.json (written by bench/retrain.py, not by this harness)."""
    if data is None:
        return []
    parts = [
        "## Retraining",
        "",
        "From `bench/results/retrain.json`, written by `bench/retrain.py` (`--minutes` of training, 30 by "
        "default: about 45 minutes with the evaluations). Algorithm 1 without labels on the samples/ images, "
        "started from the weight-only quantization of `3x7,1x6` (the paper's start; `chipq compress` starts "
        "from the reconstruction instead: BENCHMARKS.md's recipe and retraining-settings sections), evaluated "
        "on UKBench-56 (NIP 224x224); minutes are retraining wall time (caching the samples included, "
        "evaluations excluded).",
    ]
    curve = data.get("curve") or []
    if curve and all(isinstance(point, dict) for point in curve):
        rows = [
            [cm.fmt(p.get("minutes"), 1), p.get("step", ""), cm.fmt(p.get("map_float"), 4),
             cm.fmt(p.get("map_bit"), 4), cm.fmt(p.get("ns_score"), 2), cm.fmt(p.get("cosine_to_float"), 4)]
            for p in curve
        ]  # fmt: skip
        header = ["minutes", "step", "mAP float", "mAP bit", "N-S", "cos to float"]
        parts += ["", cm.md_table(header, rows, "r" * len(header))]
    if isinstance(data.get("train_seconds"), (int, float)) and data.get("steps"):
        parts += ["", f"{data['steps']} steps in {data['train_seconds'] / 60:.1f} minutes of training."]
    return parts + [""]


def read_results(results_dir: Path) -> dict[str, dict]:
    """Every results file of every benchmark that is there (JSON only), by file name."""
    found = {}
    for bench in BENCHMARKS:
        for file in bench.results:
            if file.endswith(".json"):
                try:
                    data = cm.read_result(results_dir, file.removesuffix(".json"))
                except ValueError:  # mid-write or another format: leave its section out
                    data = None
                if isinstance(data, dict):
                    found[file] = data
    return found


def section(name: str, found: dict[str, dict], results_dir: Path) -> str | None:
    """The page section of one benchmark, or None when its results are not there."""
    bench = BY_NAME[name]
    own = {file: found[file] for file in bench.results if file in found}
    main = own.get(bench.results[0])
    if main is None:
        return None
    if name in RENDER:
        extra = speed_summary(main) if name == "speed" else []
        return with_provenance(RENDER[name](main), name, own, extra)
    if name == "retrain":
        return with_provenance("\n".join(retrain_section(main)), name, own)
    if name == "scale":
        import scale as scale_bench

        return with_provenance(scale_bench.render(main), name, own)
    if name == "memory":
        import memory as memory_bench

        return with_provenance(memory_bench.render(main, own.get("memory_before.json")), name, own)
    if name == "evalset":
        import evalset

        return with_provenance(evalset.render(main), name, own)
    if name == "plan":
        import plan as plan_bench

        return with_provenance(plan_bench.render(main), name, own)
    if name == "plan_stability":
        import plan_stability

        return with_provenance(plan_stability.render(main), name, own) if "measured" in main else None
    if name == "recipe":
        import recipe as recipe_bench

        sweep = found.get("reconstruct_sweep.json")
        own = {**own, **({"reconstruct_sweep.json": sweep} if sweep else {})}
        text = recipe_bench.render_markdown(main, own.get("recipe_longer.json"), sweep)
        rows = found.get("retrain_sweep.json")
        if recipe_bench.plot_curve(main, own.get("recipe_longer.json"), Path(results_dir) / "recipe_curve.png", rows):
            text = text.rstrip("\n") + "\n\n![cosine and mAP against minutes](bench/results/recipe_curve.png)"
        return with_provenance(text, name, own)
    if name == "reconstruct_sweep":  # its table is part of the recipe section
        return None
    if name == "retrain_sweep":
        import retrain_sweep as retrain_sweep_bench

        text = "## Algorithm 1 settings (`bench/retrain_sweep.py`)\n\n" + retrain_sweep_bench.render_markdown(main)
        return with_provenance(text, name, own)
    if name == "structured":
        import structured

        return with_provenance(structured.render(main), name, own)
    if name == "v2_curve":
        import v2_curve

        return with_provenance(v2_curve.render(main, found.get("memory.json"), found.get("plan_stability.json")), name, own)
    raise ValueError(f"no section for {name!r}")


def render_page(found: dict[str, dict], results_dir: Path) -> str:
    """BENCHMARKS.md: a header, then one section per benchmark in `BENCHMARKS` order."""
    stale = [b.name for b in BENCHMARKS if any(provenance(found[f], f, b.name)[1] for f in b.results if f in found)]
    missing = [b.name for b in BENCHMARKS if b.results[0] not in found]
    parts = [
        "# Benchmarks",
        "",
        "Generated by `bench/run_all.py` from the files in `bench/results/`: edit the scripts, not this page. "
        "Every section names the files its numbers come from, when and on which machine they were measured and "
        "the command that made them. Reproduce everything with `.venv/bin/python bench/run_all.py` (hours on "
        "2 cores), one benchmark with `--only NAME`, a smoke run of every benchmark on small settings with "
        "`--quick`; `--list` names each benchmark's script and result files.",
        "",
    ]
    if stale:
        parts += [f"**Stale sections** (made by older code; rerun on a quiet machine): {', '.join(stale)}.", ""]
    if missing:
        parts += [f"Not measured yet: {', '.join(missing)}.", ""]
    if "speed.json" in found:
        parts += contention_notes({"speed": found["speed.json"]})
    for bench in BENCHMARKS:
        text = section(bench.name, found, results_dir)
        if text is not None:
            parts += [text, ""]
    return "\n".join(parts)


def write_page(results_dir: Path, page: Path) -> Path:
    found = read_results(results_dir)
    if not found:
        raise SystemExit(f"no results in {results_dir}: run the benchmarks first")
    cm.write_atomic(page, render_page(found, results_dir))
    return page


def listing() -> str:
    """``--list``: each benchmark, its script and its result files."""
    return "\n".join(f"{b.name:18} bench/{b.script:22} {', '.join(b.results)}" for b in BENCHMARKS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(NAMES), help="comma-separated: " + ",".join(NAMES))
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (results in <work>/quick)")
    parser.add_argument("--work", type=Path, default=cm.DEFAULT_WORK)
    parser.add_argument("--model", type=Path, help="float model (default: the real VGG-16, fetched)")
    parser.add_argument("--blob", type=Path, help=f"post-training blob (default: made, {cm.MAIN_PLAN})")
    parser.add_argument("--retrained", type=Path, help="a retrained blob for the fidelity tables")
    parser.add_argument("--repeats", type=int, default=5, help="speed: rounds over the engines")
    parser.add_argument("--cost-repeats", type=int, default=3)
    parser.add_argument("--configs", default=fidelity.DEFAULT_CONFIGS, help="fidelity: dataset:method,...;...")
    parser.add_argument("--results", type=Path, help="default bench/results (<work>/quick with --quick)")
    parser.add_argument("--page", type=Path, help="default BENCHMARKS.md (<work>/quick/BENCHMARKS.md with --quick)")
    parser.add_argument("--report-only", action="store_true", help="only regenerate the page")
    parser.add_argument("--list", action="store_true", help="list the benchmarks, their scripts and result files")
    # Inputs, for runs on other data (the tests use a tiny model and generated photos):
    parser.add_argument("--chip-size", default="224x224", help="chip input WxH")
    parser.add_argument("--large-size", default="640x480", help="whole-image input WxH")
    parser.add_argument("--photos", type=Path, help="speed/cost photos (default: UKBench, else samples/photos)")
    parser.add_argument("--calib", type=Path, help="calibration photos (default: samples/photos)")
    parser.add_argument("--ukbench", type=Path, default=cm.UKBENCH, help="folder with jpg/ and groundtruth.json")
    parser.add_argument("--samples", type=Path, default=cm.SAMPLES, help="photos/, queries/, groundtruth.json")
    parser.add_argument("--eval", type=Path, help="held-out set of bench/evalset.py (default: built in the work folder)")
    args = parser.parse_args(argv)
    if args.list:
        print(listing())
        return
    command = shlex.join(["python", "bench/run_all.py", *(sys.argv[1:] if argv is None else argv)])
    quick_dir = Path(args.work) / "quick"
    results_dir = args.results or (quick_dir if args.quick else cm.RESULTS_DIR)
    page = args.page or (quick_dir / "BENCHMARKS.md" if args.quick else cm.PAGE)
    if not args.report_only:
        chosen = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in NAMES]
        if unknown:
            parser.error(f"--only: unknown benchmark {unknown[0]!r} (choose from {', '.join(NAMES)})")
        for name in (n for n in NAMES if n in chosen):  # always in the documented order
            started = time.perf_counter()
            print(f"[{name}] running ...", flush=True)
            if BY_NAME[name].child:
                path = run_child(name, args, results_dir)
            else:
                path = cm.write_result(results_dir, name, run_one(name, args), command)
            print(f"[{name}] {time.perf_counter() - started:.0f} s -> {path}", flush=True)
    print(f"page -> {write_page(results_dir, page)}")


if __name__ == "__main__":
    sys.exit(main())
