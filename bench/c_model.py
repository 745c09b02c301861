"""C model speed: `chipq_ref` (the `chipq export --format c` executor) beside the golden and fast executors.

All three run the post-training ``3x7,1x6`` VGG-16 blob on one real photo at the chip size (224x224)
and must give the same maps on every layer (checked here, every run of chipq_ref against golden).

- ``c_model``: ``chipq export BLOB --format c`` built by its own Makefile with the system cc
  (``-std=c99 -O2``; chipq_ref is linked against libchipq.a, the library a testbench links), one
  thread; each run is a whole process: read and check the blob (CRCs and the SPEC 4.5 bound
  included), read the pixels, run every layer, write every layer's map. Reported: wall
  time and the child's CPU time (user + system); for the Python executors this process's CPU time
  (all threads), so a busy machine shows in the wall time more than in the CPU time.
- ``chipq_golden``: `chipq.executor.golden.run` with every layer's output (int64 numpy), one run.
- ``chipq_fast``: `chipq.executor.fast.FastExecutor` on its own route, torch with 2 threads, batch 1.

Method: one untimed warm-up of chipq_ref and of the fast executor, then ``repeats`` rounds each
timing chipq_ref once and the fast executor once; the median over rounds; the golden executor once.
The share of the CPU other processes used meanwhile is recorded (`common.CpuMeter`).

Run: ``python bench/c_model.py [--model vgg16.pt] [--blob B] [--repeats 5] [--work DIR]``; results in
``bench/results/c_model.json``, rendered into BENCHMARKS.md by ``bench/run_all.py``.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import common as cm
import numpy as np

LABELS = {
    "c_model": "chipq_ref, C99 reference model on libchipq.a (1 thread, whole process)",
    "chipq_golden": "chipq golden executor (int64 numpy)",
    "chipq_fast": "chipq fast executor (2 threads)",
}


def build(blob: Path, work: Path) -> tuple[Path, str]:
    """`chipq export BLOB --format c` into work/c_model, then `make -C` it; returns the binary and cc's version."""
    from chipq.export import export_blob

    folder = work / "c_model"
    if folder.exists():
        shutil.rmtree(folder)
    export_blob(blob, "c", folder)
    done = subprocess.run(["make", "-C", str(folder)], capture_output=True, text=True)
    if done.returncode != 0 or done.stderr:
        raise SystemExit(f"make -C {folder} failed or warned:\n{done.stdout}{done.stderr}")
    version = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return folder / "chipq_ref", version


def time_c(binary: Path, blob: Path, pixels: Path, out: Path) -> tuple[float, float]:
    """One whole chipq_ref process: (wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([str(binary), str(blob), str(pixels), str(out)], capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"chipq_ref failed: {done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def c_outputs(model, out: Path) -> list[np.ndarray]:
    from chipq.export.registry import layer_outputs

    return [np.fromfile(out / row["file"], dtype=np.uint8).reshape(row["shape"]) for row in layer_outputs(model)]


def run(model: Path | None = None, blob: Path | None = None, work: Path = cm.DEFAULT_WORK, photos: Path | None = None,
        chip_hw: tuple[int, int] = (224, 224), repeats: int = 5, threads: int = cm.THREADS) -> dict:  # fmt: skip
    """Build chipq_ref, time the three executors on one photo; returns the JSON-ready results."""
    from chipq.executor import golden
    from chipq.executor.fast import FastExecutor
    from chipq.formats import constants as C
    from chipq.formats.reader import read_blob
    from chipq.images import list_images, load_image, resize
    from chipq.quant.calibrate import default_calib_dir

    cm.set_threads(threads)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    if blob is None:
        blob = cm.ptq_blob(cm.resolve_model(model, work), cm.MAIN_PLAN, work, default_calib_dir(), chip_hw)
    blob = Path(blob)
    chip = read_blob(blob)
    photos = Path(photos) if photos else cm.default_photos()
    image_path = list_images(photos)[0]
    chip_hw = (chip.input_height, chip.input_width)  # the blob's input buffer
    pixels = resize(load_image(image_path), chip_hw).transpose(2, 0, 1)
    if chip.channel_order == C.ChannelOrder.BGR:
        pixels = pixels[::-1]
    pixels = np.ascontiguousarray(pixels)
    pixel_file = work / "c_model_pixels.u8"
    pixels.tofile(pixel_file)
    binary, compiler = build(blob, work)
    out = work / "c_model_out"
    fast = FastExecutor(chip)

    meter = cm.CpuMeter()
    time_c(binary, blob, pixel_file, out)  # warm-up (file cache)
    fast_maps = fast.run(pixels[None], taps=True)
    c_wall, c_cpu, fast_s, fast_cpu = [], [], [], []
    for _ in range(repeats):
        wall, cpu = time_c(binary, blob, pixel_file, out)
        c_wall.append(wall)
        c_cpu.append(cpu)
        started, cpu = time.perf_counter(), time.process_time()
        fast.run(pixels[None], taps=True)
        fast_s.append(time.perf_counter() - started)
        fast_cpu.append(time.process_time() - cpu)
    started, cpu = time.perf_counter(), time.process_time()
    gold = golden.run(chip, pixels, taps=True)
    golden_s, golden_cpu = time.perf_counter() - started, time.process_time() - cpu
    other = meter.other_share()

    c_maps = c_outputs(chip, out)
    c_equal = all(np.array_equal(c, g) for c, g in zip(c_maps, gold)) and len(c_maps) == len(gold)
    fast_equal = all(np.array_equal(f[0], g) for f, g in zip(fast_maps, gold))
    engines = {
        "c_model": {"seconds": cm.median(c_wall), "cpu_seconds": cm.median(c_cpu), "runs": repeats, "threads": 1},
        "chipq_golden": {"seconds": golden_s, "cpu_seconds": golden_cpu, "runs": 1, "threads": 1},
        "chipq_fast": {"seconds": cm.median(fast_s), "cpu_seconds": cm.median(fast_cpu), "runs": repeats,
                       "threads": threads, "route": fast.route_label},  # fmt: skip
    }
    for row in engines.values():
        row["ratio_to_golden"] = row["seconds"] / golden_s
    return {
        "benchmark": "c_model",
        "machine": cm.machine_info(),
        "compiler": compiler,
        "cflags": "-std=c99 -O2 -Wall -Wextra -pedantic (the exported Makefile's default)",
        "blob": str(blob),
        "blob_sha256": cm.sha256_file(blob),
        "image": str(image_path),
        "input_hw": list(chip_hw),
        "layers": len(chip.layers),
        "method": {"repeats": repeats, "statistic": "median over rounds", "golden_runs": 1},
        "other_cpu_share": other,
        "c_model_equal_to_golden": bool(c_equal),
        "fast_equal_to_golden": bool(fast_equal),
        "engines": engines,
    }


def render(result: dict) -> str:
    """The BENCHMARKS.md section."""
    golden_cpu = result["engines"]["chipq_golden"].get("cpu_seconds")
    rows = []
    for name, row in result["engines"].items():
        cpu = row.get("cpu_seconds")
        cpu_ratio = f"{cpu / golden_cpu:.3f}x" if cpu is not None and golden_cpu else "—"
        rows.append([LABELS[name], f"{row['seconds']:,.2f}", cm.fmt(cpu, 2), f"{row['ratio_to_golden']:.3f}x", cpu_ratio, row["runs"]])
    other = result.get("other_cpu_share")
    hw = cm.hw_text(result["input_hw"])
    return "\n".join(
        [
            "## C reference model",
            "",
            f"`chipq export --format c` (`bench/c_model.py`): `chipq_ref` built by the exported Makefile "
            f"({result['compiler']}, {result['cflags']}) on the post-training `{cm.MAIN_PLAN}` blob, one photo "
            f"(`{Path(result['image']).name}`) at {hw}, all {result['layers']} layers. chipq_ref's time is a "
            "whole process (read and check the blob, run, write every layer's map); median of "
            f"{result['method']['repeats']} rounds, golden executor once. *CPU s* is the CPU time the run used "
            "(chipq_ref: the child process; golden and fast: this process, all threads); on a busy machine it "
            "is the steadier figure.",
            "",
            cm.md_table(["executor", "seconds / image", "CPU s", "× golden", "× golden, CPU", "runs"], rows),
            "",
            f"chipq_ref equal to golden on every element of every layer: {'yes' if result['c_model_equal_to_golden'] else 'NO'}; "
            f"fast == golden: {'yes' if result['fast_equal_to_golden'] else 'NO'}"
            + (f"; other processes used {other:.0%} of the CPU meanwhile." if other is not None else "."),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="float model (default: the real VGG-16, fetched)")
    parser.add_argument("--blob", type=Path, help=f"the blob (default: made, {cm.MAIN_PLAN})")
    parser.add_argument("--work", type=Path, default=cm.DEFAULT_WORK)
    parser.add_argument("--photos", type=Path, help="photos (default: UKBench, else samples/photos)")
    parser.add_argument("--chip-size", default="224x224", help="chip input WxH of the blob made without --blob")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=cm.RESULTS_DIR / "c_model.json")
    args = parser.parse_args(argv)
    result = run(args.model, args.blob, args.work, args.photos, cm.parse_hw(args.chip_size), args.repeats)
    cm.write_result(args.out.parent, args.out.stem, result)
    print(render(result))


if __name__ == "__main__":
    sys.exit(main())
