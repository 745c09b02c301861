"""Cost: compress time and peak memory, extraction peak memory, one retraining step.

Every measurement runs in a fresh Python process (this file with ``--child``), so its peak resident
memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is that task's alone, interpreter, torch and
the model included. A ``load`` child (imports and the float model only) gives the floor to read the
others against. Times are wall-clock inside the child, medians over ``repeats`` children.

Measured:

- ``load``: start Python, import chipq and torch, read the float model (the process's whole wall
  time, and the model read alone).
- ``compress``: post-training compression of the plan (calibration on samples/photos at 224x224,
  quantization, serialisation), as `chipq compress` does it minus the file write.
- ``extract_nip`` / ``extract_rnip9``: descriptors of a few photos from the post-training blob
  (integer executor), NIP at 224x224 and RNIP-9 (36 network inputs per photo).
- ``extract_float_nip``: the same NIP with the float model, for comparison.
- ``retrain_step``: `chipq.retrain.trainer.Retrainer` (Algorithm 1, label-free distillation) with the
  default settings but a small sample set: the cache of frozen-prefix outputs, then a few training
  steps; seconds per step (median, first step excluded) and peak memory.

Run: ``python bench/cost.py [--model vgg16.pt] [--repeats 3] [--work DIR]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import common as cm

TASKS = ("load", "compress", "extract_nip", "extract_rnip9", "extract_float_nip", "retrain_step")
EXTRACT_IMAGES = {"extract_nip": 4, "extract_rnip9": 2, "extract_float_nip": 4}
RETRAIN_SAMPLES = 16
RETRAIN_STEPS = 4


# --- children -------------------------------------------------------------------------------------


def child(spec: dict) -> dict:
    """Run one task in this process and return its numbers (peak memory read at the end)."""
    cm.set_threads(spec["threads"])
    started = time.perf_counter()
    from chipq.importers import load_model

    stack = load_model(spec["model"])
    out: dict = {"load_s": time.perf_counter() - started}
    task = spec["task"]
    hw = tuple(spec["chip_hw"])
    if task == "compress":
        out.update(_compress(stack, spec, hw))
    elif task.startswith("extract"):
        out.update(_extract(stack, spec, hw))
    elif task == "retrain_step":
        out.update(_retrain(stack, spec, hw))
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return out


def _compress(stack, spec: dict, hw: tuple[int, int]) -> dict:
    from chipq.formats.writer import to_bytes
    from chipq.pipeline.compress import compress
    from chipq.quant.calibrate import calibration_batch
    from chipq.quant.plan import parse_plan

    plan = parse_plan(spec["plan"], [c.name for c in stack.conv_layers()])
    start = time.perf_counter()
    calib = calibration_batch(Path(spec["calib"]), hw)
    marks = {}
    mark = lambda stage, done=None, total=None: marks.setdefault(stage, time.perf_counter())  # noqa: E731
    result = compress(stack, plan, calib=calib, input_hw=hw, retrain=None, status=mark)
    blob = to_bytes(result.model)
    end = time.perf_counter()
    quantize_start = marks.get("quantizing weights", end)
    return {
        "seconds": end - start,
        "calibrate_s": quantize_start - start,
        "quantize_and_write_s": end - quantize_start,
        "calib_images": int(calib.shape[0]),
        "blob_bytes": len(blob),
    }


def _extract(stack, spec: dict, hw: tuple[int, int]) -> dict:
    from chipq.formats.reader import read_blob
    from chipq.images import list_images, load_image
    from chipq.retrieval.describe import describe
    from chipq.retrieval.features import chip_features, float_features

    task = spec["task"]
    if task == "extract_float_nip":
        features = float_features(stack, batch=16)
    else:
        features = chip_features(read_blob(spec["blob"]), batch=16)
    rnip = 9 if task == "extract_rnip9" else None
    paths = list_images(Path(spec["photos"]))[: spec["images"]]
    start = time.perf_counter()
    for path in paths:
        describe(load_image(path), features, size=hw, rnip=rnip, batch_size=16)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images": len(paths), "seconds_per_image": seconds / max(1, len(paths))}


def _retrain(stack, spec: dict, hw: tuple[int, int]) -> dict:
    from chipq.quant.calibrate import calibration_batch
    from chipq.quant.compress import calibrate
    from chipq.quant.plan import parse_plan
    from chipq.retrain.config import RetrainConfig
    from chipq.retrain.trainer import Retrainer, load_training_images, torch_settings

    stack = stack.without_trailing_pool()
    plan = parse_plan(spec["plan"], [c.name for c in stack.conv_layers()])
    fracs = calibrate(stack, calibration_batch(Path(spec["calib"]), hw))
    config = RetrainConfig(steps=spec["steps"], samples=spec["samples"], crop=hw[0], threads=spec["threads"])
    trainer = Retrainer(stack, plan, fracs, config, hw)
    with torch_settings(config.threads):
        start = time.perf_counter()
        trainer.build_cache(load_training_images(Path(spec["calib"])))
        cached = time.perf_counter()
        steps = []
        for _ in range(config.steps):
            tick = time.perf_counter()
            trainer.train_step()
            steps.append(time.perf_counter() - tick)
    return {
        "cache_s": cached - start,
        "cache_samples": config.samples,
        "batch": config.batch,
        "crop": config.crop,
        "trained_layers": list(trainer.net.weights.keys()),
        "step_times_s": steps,
        "seconds_per_step": cm.median(steps[1:] if len(steps) > 1 else steps),
    }


# --- parent ---------------------------------------------------------------------------------------


def measure(spec: dict) -> dict:
    """Run one child; its JSON is the last line it prints, plus the process's whole wall time."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {done.returncode}: {tail[0]}"}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - started}


def summarize(task: str, runs: list[dict]) -> dict:
    """Medians of the numeric fields over repeats; the runs themselves kept too."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"task": task, "error": runs[0]["error"], "runs": runs}
    keys = [k for k, v in good[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {"task": task, "repeats": len(good), **{k: cm.median([r[k] for r in good]) for k in keys},
            "extra": {k: v for k, v in good[0].items() if k not in keys}, "runs": runs}  # fmt: skip


def run(
    model: Path | None = None,
    blob: Path | None = None,
    work: Path = cm.DEFAULT_WORK,
    photos: Path | None = None,
    calib: Path | None = None,
    chip_hw: tuple[int, int] = (224, 224),
    repeats: int = 3,
    tasks: tuple[str, ...] = TASKS,
    threads: int = cm.THREADS,
    retrain_samples: int = RETRAIN_SAMPLES,
    retrain_steps: int = RETRAIN_STEPS,
) -> dict:
    """Measure every task in its own processes; returns the JSON-ready results."""
    from chipq.quant.calibrate import default_calib_dir

    work = Path(work)
    model_path = cm.resolve_model(model, work)
    calib = Path(calib) if calib else default_calib_dir()
    blob = Path(blob) if blob else cm.ptq_blob(model_path, cm.MAIN_PLAN, work, calib, chip_hw)
    base = {"model": str(model_path), "blob": str(blob), "plan": cm.MAIN_PLAN, "calib": str(calib),
            "photos": str(photos or cm.default_photos()), "chip_hw": list(chip_hw), "threads": threads,
            "samples": retrain_samples, "steps": retrain_steps}  # fmt: skip
    rows = []
    for task in tasks:
        spec = {**base, "task": task, "images": EXTRACT_IMAGES.get(task, 0)}
        rows.append(summarize(task, [measure(spec) for _ in range(repeats)]))
    return {"benchmark": "cost", "machine": cm.machine_info(), "settings": base, "tasks": rows}


# --- report ---------------------------------------------------------------------------------------

TASK_LABELS = {
    "load": "start Python, import chipq, read the float model",
    "compress": "compress, post-training {plan} (calibrate + quantize + serialise)",
    "extract_nip": "extract NIP {chip}, chip blob ({images} photos)",
    "extract_rnip9": "extract RNIP-9 (4 rotations of each crop at {chip}), chip blob ({images} photos)",
    "extract_float_nip": "extract NIP {chip}, float model ({images} photos)",
    "retrain_step": "retraining (Algorithm 1), one step of batch {batch} at {crop}x{crop}",
}


def render(result: dict) -> str:
    """The BENCHMARKS.md section."""
    rows = []
    for row in result["tasks"]:
        label = TASK_LABELS.get(row["task"], row["task"]).format(
            plan=result["settings"]["plan"], images=int(row.get("images", 0)),
            chip=cm.hw_text(result["settings"]["chip_hw"]),
            batch=int(row.get("batch", 0)), crop=int(row.get("crop", 0)),
        )  # fmt: skip
        if "error" in row:
            rows.append([label, "TODO: " + row["error"], "", ""])
            continue
        if row["task"] == "retrain_step":
            trained = row["extra"]["trained_layers"]
            seconds = (f"{row['seconds_per_step']:.2f} s / step, training {trained[0]}..{trained[-1]} "
                       f"(caching {int(row['cache_samples'])} samples first: {row['cache_s']:.1f} s)")  # fmt: skip
        elif row["task"] == "load":
            seconds = f"{row['process_s']:.2f} s (reading the model: {row['load_s']:.2f} s)"
        elif row["task"].startswith("extract"):
            seconds = f"{row['seconds_per_image']:.2f} s / photo"
        else:
            seconds = (f"{row['seconds']:.2f} s (calibrate {row['calibrate_s']:.2f}, "
                       f"quantize {row['quantize_and_write_s']:.2f})")  # fmt: skip
        rows.append([label, seconds, f"{row['peak_rss_mib']:,.0f} MiB", row["repeats"]])
    threads = result["settings"]["threads"]
    return "\n".join(
        [
            "## Cost",
            "",
            "Each row is a fresh process (`bench/cost.py --child`); peak memory is its `ru_maxrss` "
            f"(interpreter, torch and the float model included: compare with the first row); torch "
            f"threads {threads}; times are medians over the runs counted.",
            "",
            cm.md_table(["task", "wall time", "peak memory", "runs"], rows),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help="float model (default: the real VGG-16, fetched)")
    parser.add_argument("--blob", type=Path, help=f"chip blob (default: post-training {cm.MAIN_PLAN})")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=cm.DEFAULT_WORK)
    parser.add_argument("--results", type=Path, default=cm.RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    result = run(args.model, args.blob, args.work, repeats=args.repeats)
    print(cm.write_result(args.results, "cost", result))
    print(render(result))


if __name__ == "__main__":
    sys.exit(main())
