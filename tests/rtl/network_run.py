"""Run every layer of a chip model on the RTL, chained: layer l starts from what the RTL made for layer l-1.

Conv layers run on rtl/chipq_conv_engine.v (its ROMs from `chipq export --format hex`, its input SRAM
from the previous layer's RTL output: the activation memory between layers), max-pools through
rtl/chipq_maxpool2x2.v. Every layer's output must equal the golden executor's. Per conv layer the
measured cycles are checked equal to the engine's schedule model (`engine_cycles`) and reported
beside the first-order cost model of `chipq inspect --hw` (`ceil(MACs / MACS)` with MACS = LANES * 9,
the engine's multipliers, every one busy every cycle).

The engine is built once per network (`engine_parameters`: sized for its largest layer) and each
layer's ROM images and input map are named by plusargs, so a network costs one build per simulator,
not one per layer (a Verilator build takes about a minute; its simulation is ~100x Icarus's).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from engine_cycles import SCAN_W, engine_cycles
from rtlsim import build_once, run_built

from chipq.executor import golden
from chipq.export.memimage import write_memory_images
from chipq.formats import constants as C
from chipq.formats.model import ChipModel, ConvLayer
from chipq.formats.writer import to_bytes


def save_readmemh(path: Path, array: np.ndarray) -> None:
    """The input SRAM image: one element per line, C order; uint8 as 2 hex digits, the int16 conv1
    input x0 = p - mean as 4 digits of 16-bit two's complement (the `--vectors-hex` layout)."""
    width = 16 if array.dtype == np.int16 else 8
    words = np.ascontiguousarray(array).reshape(-1).astype(np.int64) & ((1 << width) - 1)
    fmt = f"{{:0{width // 4}x}}".format
    path.write_text("// chipq network run input\n" + "\n".join(map(fmt, words.tolist())) + "\n")


def engine_parameters(model: ChipModel, pixels_hw: tuple[int, int], lanes: int, scan_w: int) -> dict:
    """One engine for every conv of `model`: each memory as deep as the largest layer needs.

    The alpha/mask and presence ROMs are O*I deep for every model (pruned or not), so that a v1
    model and its pruned v2 version share one build; words past a layer's own are never used.
    """
    height, width = pixels_hw
    sizes = {"MAX_W": 1, "MAX_HW": 1, "IN_DEPTH": 1, "OUT_DEPTH": 1, "K_DEPTH": 1, "B_DEPTH": 1}
    for layer in model.layers:
        if isinstance(layer, ConvLayer):
            kernels = layer.out_channels * layer.in_channels
            for key, value in (("MAX_W", width), ("MAX_HW", height * width), ("IN_DEPTH", layer.in_channels * height * width),
                               ("OUT_DEPTH", layer.out_channels * height * width), ("K_DEPTH", kernels),
                               ("B_DEPTH", layer.out_channels)):  # fmt: skip
                sizes[key] = max(sizes[key], value)
        else:
            height, width = height // 2, width // 2
    return {"LANES": lanes, **sizes, "P_DEPTH": sizes["K_DEPTH"], "SCAN_W": scan_w}


def run_network(
    model: ChipModel, pixels: np.ndarray, folder: Path, lanes: int = 16, scan_w: int = SCAN_W, simulator: str = "icarus"
) -> list[dict]:
    """Every layer on the RTL, chained; returns one row per layer (cycles, predictions, seconds).

    The first row's seconds include the engine's build when it is not cached yet (`build_once`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    mapping = write_memory_images(model, to_bytes(model), folder / "rom", ["hex"])
    gold = golden.run(model, pixels, taps=True)
    current: np.ndarray = golden.subtract_mean(pixels, model.input_mean).astype(np.int16)  # x0 (SPEC 4.1)
    engine = pool = None
    rows = []
    for index, layer in enumerate(model.layers):
        work = folder / f"{index:02d}_{layer.name}"
        work.mkdir(parents=True, exist_ok=True)
        np.save(work / "expected.npy", gold[index])
        np.save(work / "input.npy", current)
        started = time.perf_counter()
        _, height, width = current.shape
        if isinstance(layer, ConvLayer):
            if engine is None:
                engine = build_once(simulator, "chipq_conv_engine", engine_parameters(model, (height, width), lanes, scan_w))
            save_readmemh(work / "input.hex", current)
            banks = {bank: folder / "rom" / info["files"]["hex"] for bank, info in mapping["layers"][index]["banks"].items()}
            plusargs = [f"+{bank.upper()}_HEX={banks[bank]}" for bank in ("alpha", "bias", "mask")]
            if layer.pruned:
                plusargs.append(f"+PRES_HEX={banks['presence']}")
            plusargs.append(f"+IN_HEX={work / 'input.hex'}")
            case = {
                "label": f"{layer.name} {height}x{width}",
                "in_ch": layer.in_channels, "out_ch": layer.out_channels, "h": height, "w": width,
                "m": layer.mask_bits, "alpha_bits": layer.alpha_bits, "pruned": int(layer.pruned),
                "bias_shift": layer.bias_shift, "out_shift": layer.out_shift,
                "expected_npy": str(work / "expected.npy"), "got_file": str(work / "got.npy"),
                "cycles_file": str(work / "cycles.txt"),
            }  # fmt: skip
            run_built(simulator, "chipq_conv_engine", engine, "tb_network", work / "sim", case=case, test_filter="conv_layer", plusargs=plusargs)
            measured = int((work / "cycles.txt").read_text())
            schedule = engine_cycles(layer, height, width, lanes, scan_w)
            macs = layer.kept_kernels() * C.KERNEL_TAPS * height * width
            rows.append({"layer": layer.name, "kind": "conv", "map": f"{height}x{width}", "cycles": measured,
                         "schedule_cycles": schedule["total"], "cost_model_cycles": -(-macs // (lanes * C.KERNEL_TAPS)),
                         "macs": macs, "seconds": time.perf_counter() - started})  # fmt: skip
            assert measured == schedule["total"], (layer.name, measured, schedule)
        else:
            if pool is None:
                pool = build_once(simulator, "chipq_maxpool2x2")
            case = {"label": f"{layer.name} {height}x{width}", "input_npy": str(work / "input.npy"),
                    "expected_npy": str(work / "expected.npy"), "got_file": str(work / "got.npy")}  # fmt: skip
            run_built(simulator, "chipq_maxpool2x2", pool, "tb_network", work / "sim", case=case, test_filter="pool_layer")
            rows.append({"layer": layer.name, "kind": "maxpool", "map": f"{height}x{width}", "cycles": 0,
                         "schedule_cycles": 0, "cost_model_cycles": 0, "macs": 0,
                         "seconds": time.perf_counter() - started})  # fmt: skip
        current = np.load(work / "got.npy")  # the RTL's own output feeds the next layer
        assert np.array_equal(current, gold[index]), layer.name  # the bench checked it; belt and braces
    return rows


def cycle_table(rows: list[dict]) -> str:
    """A Markdown table of the run: measured cycles beside the schedule model and the cost model."""
    lines = ["| layer | map | MACs | RTL cycles | schedule model | cost model (MACs / (LANES*9)) | RTL / cost model | sim s |",
             "| :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for row in rows:
        ratio = f"{row['cycles'] / row['cost_model_cycles']:.2f}x" if row["cost_model_cycles"] else "-"
        lines.append(f"| {row['layer']} | {row['map']} | {row['macs']:,} | {row['cycles']:,} | {row['schedule_cycles']:,} | "
                     f"{row['cost_model_cycles']:,} | {ratio} | {row['seconds']:.1f} |")  # fmt: skip
    total = {key: sum(row[key] for row in rows) for key in ("macs", "cycles", "schedule_cycles", "cost_model_cycles", "seconds")}
    lines.append(f"| total | | {total['macs']:,} | {total['cycles']:,} | {total['schedule_cycles']:,} | "
                 f"{total['cost_model_cycles']:,} | {total['cycles'] / max(1, total['cost_model_cycles']):.2f}x | {total['seconds']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def photo_crop(model: ChipModel, side: int, photo: Path) -> np.ndarray:
    """A side x side centre crop of `photo` at the chip's input size (what the chip sees), uint8 (3, H, W)."""
    from chipq.images import load_image, resize

    image = resize(load_image(photo), (model.input_height, model.input_width)).transpose(2, 0, 1)
    if model.channel_order == C.ChannelOrder.BGR:
        image = image[::-1]
    top, left = (model.input_height - side) // 2, (model.input_width - side) // 2
    return np.ascontiguousarray(image[:, top : top + side, left : left + side])


def crop_model(model: ChipModel, side: int) -> ChipModel:
    """`model` with a side x side input buffer: the same layers on a crop (the weights do not depend on it)."""
    from dataclasses import replace

    return replace(model, input_height=side, input_width=side)


if __name__ == "__main__":
    import argparse
    import sys

    from helpers import SAMPLES  # run as: PYTHONPATH=tests:tests/rtl python tests/rtl/network_run.py BLOB

    from chipq.formats.reader import from_bytes

    parser = argparse.ArgumentParser(description="every layer of BLOB on the RTL, chained, on a crop of a real photo")
    parser.add_argument("blob", type=Path)
    parser.add_argument("--side", type=int, default=16)
    parser.add_argument("--lanes", type=int, default=16)
    parser.add_argument("--pruned", action="store_true", help="prune half the kernels, 5-bit alpha (real_pruned.py)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/chipq_rtl_network"))
    parser.add_argument("--simulator", choices=["icarus", "verilator"], default="verilator")
    args = parser.parse_args()
    chip = from_bytes(args.blob.read_bytes())
    if args.pruned:
        from real_pruned import prune_model

        chip = prune_model(chip, keep=0.5, alpha_bits=5)
    crop = photo_crop(chip, args.side, SAMPLES / "photos" / "china.jpg")
    table = cycle_table(run_network(crop_model(chip, args.side), crop, args.work, args.lanes, simulator=args.simulator))
    print(table)
    sys.exit(0)
