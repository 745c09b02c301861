"""Speed: the chip executors against PyTorch and onnxruntime on the same VGG-16, in one interleaved run.

Engines (all run the 13 conv layers and 4 max-pools up to conv5_3, pool5 left out, on uint8
pixels; input normalisation is inside every timed call):

- ``chipq_fast``: `chipq.executor.fast.FastExecutor` on the post-training ``3x7,1x6`` blob, bit-exact
  integers, on the route it picks by itself (the int8 route: oneDNN uint8 x int8 convolutions with
  12-bit weights split into int8 pieces where needed, `chipq.executor.int8`);
- ``chipq_fast_float``: the same executor forced onto its float route (float32 BLAS on channel
  groups proven exact, summed in int32), what runs where the int8 route's self-test fails;
- ``chipq_golden``: `chipq.executor.golden.run`, naive int64 (one view at the chip size only);
- ``torch_float``: `chipq.floatnet.reference.FloatReference`, PyTorch float32;
- ``ort_float``: onnxruntime float32 on `chipq.importers.fetch.stack_to_onnx` of the same stack;
- ``ort_int8_qdq`` / ``ort_int8_qop``: onnxruntime static int8 quantization of that float ONNX
  (`onnxruntime.quantization.quantize_static`, per-channel s8 weights, u8 activations, MinMax
  calibration on real photos at the chip size), QDQ format (fused to QLinearConv by the session)
  and QOperator format (QLinearConv nodes).

Settings: one view at the chip size (224x224); the 4 NIP rotations as one batch; the whole image
at 640x480; the 9 RNIP crops of a 640x480 image, each resized to the chip size, as one batch.

Method: every engine runs once untimed per setting (warm-up, output kept for the cosine to the
float output); then ``repeats`` rounds, each running every engine once, the order rotated from
round to round, with a short pause between calls so no thread pool still spins into the next
engine's time. Reported: the median over rounds, ms per image, images per second and the ratio to
the faster onnxruntime int8 variant of the same setting; also the share of the CPU other processes
used while the setting ran (`common.CpuMeter`). Threads: torch 2 intra-op, onnxruntime 2 intra-op,
1 inter-op, sequential.

Run: ``python bench/speed.py [--model vgg16.pt] [--blob B] [--repeats 5] [--work DIR]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import common as cm
import numpy as np

ENGINES = ("chipq_fast", "chipq_fast_float", "chipq_golden", "torch_float", "ort_float", "ort_int8_qdq", "ort_int8_qop")
LABELS = {
    "chipq_fast": "chipq fast executor (exact int)",
    "chipq_fast_float": "chipq fast executor, float route (exact int)",
    "chipq_golden": "chipq golden executor (naive int64)",
    "torch_float": "PyTorch float32",
    "ort_float": "onnxruntime float32",
    "ort_int8_qdq": "onnxruntime int8 static, QDQ",
    "ort_int8_qop": "onnxruntime int8 static, QOperator",
}
INT8 = ("ort_int8_qdq", "ort_int8_qop")
PAUSE_S = 0.1
GOLDEN_SETTING = "chip_1"
ORT_CALIB_IMAGES = 8

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class Setting:
    """One input configuration: a key, a label and the uint8 (N, 3, H, W) batch every engine gets."""

    key: str
    label: str
    pixels: np.ndarray


def make_settings(img: np.ndarray, chip_hw: tuple[int, int], large_hw: tuple[int, int]) -> list[Setting]:
    """The four input configurations, all cut from one RGB photo."""
    from chipq.images import resize
    from chipq.retrieval.describe import rotated_inputs
    from chipq.retrieval.rois import rnip_crops

    def batch(images: list[np.ndarray]) -> np.ndarray:
        return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))

    chip, large = cm.hw_text(chip_hw), cm.hw_text(large_hw)
    whole = resize(img, large_hw)
    crops = [whole[b.y : b.y + b.h, b.x : b.x + b.w] for b in rnip_crops(large_hw[1], large_hw[0], 9)]
    return [
        Setting("chip_1", f"{chip}, one view", batch([resize(img, chip_hw)])),
        Setting("chip_nip4", f"{chip}, the 4 NIP rotations as one batch", batch(rotated_inputs(img, chip_hw))),
        Setting("large_1", f"{large}, whole image", batch([whole])),
        Setting("rnip9", f"RNIP-9: {len(crops)} crops of a {large} image at {chip}, one batch",
                batch([resize(c, chip_hw) for c in crops])),
    ]  # fmt: skip


# --- engines --------------------------------------------------------------------------------------


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_models(stack, work: Path, calib: np.ndarray, key: str) -> dict[str, Path]:
    """The float ONNX of `stack` and its two static int8 quantizations, made once per key."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from chipq.floatnet.reference import normalise
    from chipq.formats.fileio import replace_file
    from chipq.importers.fetch import ONNX_INPUT, stack_to_onnx

    folder = Path(work) / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}-{key}.onnx" for name in ("ort_float", *INT8)}
    if not paths["ort_float"].is_file():
        temp = paths["ort_float"].with_suffix(".tmp")
        onnx.save(stack_to_onnx(stack), str(temp))
        replace_file(temp, paths["ort_float"])

    class Reader(CalibrationDataReader):
        """One normalised photo per call, like the float reference feeds the network."""

        def __init__(self) -> None:
            self.items = iter(normalise(calib[i : i + 1], stack.mean, stack.std) for i in range(len(calib)))

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {ONNX_INPUT: item}

    logging.getLogger().setLevel(logging.ERROR)  # quantize_static logs a pre-processing hint
    for name, form in (("ort_int8_qdq", QuantFormat.QDQ), ("ort_int8_qop", QuantFormat.QOperator)):
        if paths[name].is_file():
            continue
        temp = paths[name].with_suffix(".tmp.onnx")
        quantize_static(str(paths["ort_float"]), str(temp), Reader(), quant_format=form, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
        replace_file(temp, paths[name])
    return paths


def int8_work(executor, chip_hw: tuple[int, int]) -> dict | None:
    """How many int8 multiplies `executor` (a FastExecutor) spends per multiply-add of the conv stack
    at the chip size: 1 where a channel's weights fit int8, 2 where they are split (the first layer,
    in float32 on that route, counts 1). None when it runs the float route."""
    from chipq.executor import int8
    from chipq.formats.model import ConvLayer

    if executor.route != "int8":
        return None
    (height, width), macs, products, per_layer = chip_hw, 0, 0.0, {}
    for (step, _), layer in zip(executor.steps, executor.model.layers):
        if not isinstance(layer, ConvLayer):
            height, width = height // 2, width // 2
            continue
        layer_macs = layer.out_channels * layer.in_channels * 9 * height * width
        pieces = step.pieces if isinstance(step, int8.Int8Conv) else 1.0
        macs, products = macs + layer_macs, products + pieces * layer_macs
        per_layer[layer.name] = round(pieces, 3)
    return {"int8_products_per_mac": products / macs, "pieces_per_layer": per_layer, "gmac": macs / 1e9}


def build_engines(
    names: tuple[str, ...], stack, chip_model, ort_paths: dict[str, Path], threads: int
) -> dict[str, Runner]:
    """A callable per engine: uint8 (N, 3, H, W) -> the conv5_3 map, in real units where it matters."""
    from chipq.executor import golden
    from chipq.executor.fast import FastExecutor
    from chipq.floatnet.reference import FloatReference, normalise
    from chipq.importers.fetch import ONNX_INPUT

    scale = np.float32(2.0 ** -chip_model.activation_fracs()[-1])
    runners: dict[str, Runner] = {}
    for name in names:
        if name in ("chipq_fast", "chipq_fast_float"):
            fast = FastExecutor(chip_model, batch=64, route="auto" if name == "chipq_fast" else "float")
            runners[name] = lambda x, fast=fast: fast.run(x).astype(np.float32) * scale
        elif name == "chipq_golden":
            runners[name] = lambda x: np.stack([golden.run(chip_model, p) for p in x]).astype(np.float32) * scale
        elif name == "torch_float":
            runners[name] = FloatReference(stack, batch=64).run
        else:
            session = ort_session(ort_paths[name], threads)
            runners[name] = lambda x, s=session: s.run(None, {ONNX_INPUT: normalise(x, stack.mean, stack.std)})[0]
    return runners


# --- timing ---------------------------------------------------------------------------------------


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over the batch of the cosine between two (N, C, h, w) maps."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean((a * b).sum(axis=1) / np.maximum(norms, 1e-30)))


def time_setting(setting: Setting, runners: dict[str, Runner], repeats: int, golden_repeats: int, pause: float) -> dict:
    """Interleaved rounds over the engines on one setting (module docstring)."""
    active = [n for n in runners if n != "chipq_golden" or setting.key == GOLDEN_SETTING]
    outputs, times = {}, {name: [] for name in active}
    for name in active:
        if name != "chipq_golden":  # 15 s per view: its one timed run gives the output
            outputs[name] = runners[name](setting.pixels)
            time.sleep(pause)
    meter = cm.CpuMeter()
    for round_ in range(repeats):
        shift = round_ % len(active)
        for name in active[shift:] + active[:shift]:
            if name == "chipq_golden" and len(times[name]) >= golden_repeats:
                continue
            start = time.perf_counter()
            out = runners[name](setting.pixels)
            times[name].append((time.perf_counter() - start) * 1e3)
            outputs.setdefault(name, out)
            time.sleep(pause)
    background = meter.other_share()
    count = setting.pixels.shape[0]
    engines = {}
    for name in active:
        ms = cm.median(times[name])
        engines[name] = {
            "times_ms": [round(t, 2) for t in times[name]],
            "median_ms": ms,
            "ms_per_image": ms / count,
            "images_per_s": 1e3 * count / ms,
            "cosine_to_float": cosine(outputs[name], outputs["torch_float"]) if "torch_float" in outputs else None,
        }
    int8 = [n for n in INT8 if n in engines]
    reference = min(int8, key=lambda n: engines[n]["median_ms"]) if int8 else None
    for data in engines.values():
        data["ratio_to_int8"] = data["median_ms"] / engines[reference]["median_ms"] if reference else None
    result = {
        "key": setting.key,
        "label": setting.label,
        "batch": count,
        "input_hw": list(setting.pixels.shape[2:]),
        "int8_reference": reference,
        "other_cpu_share": background,
        "engines": engines,
    }
    if "chipq_golden" in outputs and "chipq_fast" in outputs:
        result["fast_equals_golden"] = bool(np.array_equal(outputs["chipq_golden"], outputs["chipq_fast"]))
    return result


def run(
    model: Path | None = None,
    blob: Path | None = None,
    work: Path = cm.DEFAULT_WORK,
    photos: Path | None = None,
    chip_hw: tuple[int, int] = (224, 224),
    large_hw: tuple[int, int] = (480, 640),
    repeats: int = 5,
    golden_repeats: int = 1,
    engines: tuple[str, ...] = ENGINES,
    settings: tuple[str, ...] | None = None,
    threads: int = cm.THREADS,
    pause: float = PAUSE_S,
) -> dict:
    """Build every engine, time every setting; returns the JSON-ready results."""
    from chipq.formats.reader import read_blob
    from chipq.images import list_images, load_image
    from chipq.importers import load_model
    from chipq.quant.calibrate import calibration_batch, default_calib_dir

    cm.set_threads(threads)
    work = Path(work)
    model_path = cm.resolve_model(model, work)
    photos = Path(photos) if photos else cm.default_photos()
    blob = Path(blob) if blob else cm.ptq_blob(model_path, cm.MAIN_PLAN, work, default_calib_dir(), chip_hw)
    stack = load_model(model_path).without_trailing_pool()
    chip_model = read_blob(blob)
    key = cm.sha256_file(model_path)[:16]
    ort_paths = {}
    if any(name.startswith("ort_") for name in engines):
        calib = calibration_batch(default_calib_dir(), chip_hw, ORT_CALIB_IMAGES)
        ort_paths = ort_models(stack, work, calib, f"{key}-{cm.hw_text(chip_hw)}")
    runners = build_engines(tuple(engines), stack, chip_model, ort_paths, threads)
    from chipq.executor.fast import FastExecutor

    fast = FastExecutor(chip_model)  # what chipq_fast runs, described in the report
    image_path = list_images(photos)[0]
    chosen = [s for s in make_settings(load_image(image_path), chip_hw, large_hw) if not settings or s.key in settings]
    started = time.perf_counter()
    timed = [time_setting(s, runners, repeats, golden_repeats, pause) for s in chosen]
    return {
        "benchmark": "speed",
        "machine": cm.machine_info(),
        "model": str(model_path),
        "blob": str(blob),
        "blob_sha256": cm.sha256_file(blob),
        "chipq_fast_route": fast.route_label,
        "chipq_int8_work": int8_work(fast, chip_hw),
        "image": str(image_path),
        "threads": {"torch_intra_op": threads, "ort_intra_op": threads, "ort_inter_op": 1,
                    "ort_execution_mode": "sequential", "ort_spinning": "default (on)"},  # fmt: skip
        "method": {"repeats": repeats, "golden_repeats": golden_repeats, "pause_s": pause,
                   "statistic": "median over rounds", "int8_calibration_images": ORT_CALIB_IMAGES},  # fmt: skip
        "seconds": time.perf_counter() - started,
        "settings": timed,
    }


# --- report ---------------------------------------------------------------------------------------


def headline(result: dict) -> dict:
    """The numbers the README quotes: fast vs int8 and float vs int8 at one view of the chip size."""
    first = next((s for s in result["settings"] if s["key"] == GOLDEN_SETTING), None)
    if first is None:
        return {}
    engines = first["engines"]
    return {
        name: engines[name]["ratio_to_int8"] for name in ("chipq_fast", "ort_float", "torch_float") if name in engines
    } | {"int8_reference": first["int8_reference"]}


def render(result: dict) -> str:
    """The BENCHMARKS.md section."""
    threads = result["threads"]
    method = result["method"]
    parts = [
        "## Speed",
        "",
        f"VGG-16 conv1_1..conv5_3 (pool5 left out) on one photo (`{Path(result['image']).name}`); "
        f"chipq runs the post-training `{cm.MAIN_PLAN}` blob. One interleaved run: each round runs every "
        f"engine once (order rotated per round), {method['repeats']} rounds, median reported "
        f"(golden executor: {method['golden_repeats']} run, one view only). Threads: torch "
        f"{threads['torch_intra_op']}, onnxruntime intra-op {threads['ort_intra_op']} / inter-op "
        f"{threads['ort_inter_op']}. *× int8* is the median time over the faster onnxruntime int8 "
        "variant's (lower is faster); *cos* is the cosine of the conv5_3 map to PyTorch float's "
        "(Fidelity gives the cosine of the descriptors). "
        "A NIP descriptor is one 4-rotation batch; an RNIP-9 descriptor turns each of the 9 crops too "
        "(36 inputs, four RNIP-9 batches).",
    ]
    if result.get("chipq_fast_route"):
        parts[-1] += f" The chipq fast executor ran its {result['chipq_fast_route']}."
    work = result.get("chipq_int8_work")
    if work:
        parts[-1] += (
            f" On that route the blob costs **{work['int8_products_per_mac']:.2f}** int8 multiplies per "
            f"multiply-add of the {work['gmac']:.1f} GMAC stack (a weight wider than int8 is two int8 "
            "pieces; conv1-conv3 weights reach 12 bits), against 1 for onnxruntime's 8-bit-weight model."
        )
    for setting in result["settings"]:
        rows = []
        for name, data in setting["engines"].items():
            rows.append([
                LABELS.get(name, name), cm.fmt(data["median_ms"]), cm.fmt(data["ms_per_image"]),
                cm.fmt(data["images_per_s"], 2), cm.fmt(data["ratio_to_int8"], 2) + "x",
                cm.fmt(data["cosine_to_float"], 4), len(data["times_ms"]),
            ])  # fmt: skip
        note = f"other processes used {setting['other_cpu_share']:.0%} of the CPU meanwhile" if setting[
            "other_cpu_share"] is not None else ""  # fmt: skip
        if "fast_equals_golden" in setting:
            note += "; fast == golden on every element: " + ("yes" if setting["fast_equals_golden"] else "**NO**")
        parts += [
            "",
            f"### {setting['label']} (batch {setting['batch']})",
            "",
            cm.md_table(["engine", "ms / batch", "ms / image", "images / s", "× int8", "cos", "runs"], rows),
            "",
            note + ".",
        ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="float model (default: the real VGG-16, fetched)")
    parser.add_argument("--blob", type=Path, help=f"chip blob (default: post-training {cm.MAIN_PLAN})")
    parser.add_argument("--photos", type=Path, help="folder whose first photo is timed")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--golden-repeats", type=int, default=1)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--work", type=Path, default=cm.DEFAULT_WORK)
    parser.add_argument("--results", type=Path, default=cm.RESULTS_DIR)
    args = parser.parse_args(argv)
    result = run(args.model, args.blob, args.work, args.photos, repeats=args.repeats,
                 golden_repeats=args.golden_repeats, engines=tuple(args.engines.split(",")))  # fmt: skip
    print(cm.write_result(args.results, "speed", result))
    print(render(result))


if __name__ == "__main__":
    sys.exit(main())
