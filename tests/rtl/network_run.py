"""Run a whole chip model on rtl/chipq_network.v: one start pulse, the layer sequencer does the rest.

The ROMs and the layer table are the network images `chipq export --format hex` writes
(`write_memory_images`: network.{layers,alpha,mask,bias,presence}.hex, SPEC 7), named at run time by
plusargs, so one Verilator build (per size: `network_parameters`) runs any network that fits it, the
v1 and the pruned v2 VGG-16 alike. Every stage's output (a conv, or the max-pool fused into its
write-back) must equal the golden executor's, read through the host port while the sequencer pauses
after the stage (`step`), and the cycle counter must equal the schedule model (`network_cycles`) per
stage and in total. The rows are tabled beside the first-order cost model of `chipq inspect --hw`
(`ceil(MACs / MACS)` with MACS = LANES * 9, the engine's multipliers, every one busy every cycle).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from engine_cycles import SCAN_W, network_cycles
from rtlsim import build_once, run_built

from chipq.executor import golden
from chipq.export.memimage import write_memory_images
from chipq.formats import constants as C
from chipq.formats.model import ChipModel, ConvLayer
from chipq.formats.writer import to_bytes


def save_input_hex(path: Path, x0: np.ndarray) -> None:
    """SRAM A's image: the conv1 input x0 = p - mean, one 9-bit two's complement word a line, C order."""
    words = np.ascontiguousarray(x0).reshape(-1).astype(np.int64) & 0x1FF
    path.write_text("// chipq network input x0\n" + "\n".join(f"{w:03x}" for w in words.tolist()) + "\n")


def network_parameters(model: ChipModel, network: dict, lanes: int, scan_w: int) -> dict:
    """The sequencer's sizes for `model` (its `memory_map.json` "network" part): every memory as deep
    as the network needs. The alpha/mask and presence ROMs are as deep as all kernels (pruned or not),
    so a v1 model and its pruned v2 version share one build."""
    kernels = sum(layer.out_channels * layer.in_channels for layer in model.layers if isinstance(layer, ConvLayer))
    stages = network["stages"]
    maps = [s["in_channels"] * s["height"] * s["width"] for s in stages]
    maps += [s["out_channels"] * (s["height"] // 2) * (s["width"] // 2) if s["pool"] else s["out_channels"] * s["height"] * s["width"]
             for s in stages]  # fmt: skip
    return {
        "LANES": lanes,
        "MAX_W": max(s["width"] for s in stages),
        "MAX_HW": max(s["height"] * s["width"] for s in stages),
        "ACT_DEPTH": max(maps),
        "K_DEPTH": kernels,
        "B_DEPTH": network["banks"]["bias"]["depth"],
        "P_DEPTH": kernels,
        "T_DEPTH": len(stages),
        "SCAN_W": scan_w,
    }


def run_network(
    model: ChipModel, pixels: np.ndarray, folder: Path, lanes: int = 16, scan_w: int = SCAN_W, simulator: str = "icarus",
    step: bool = True, host_input: bool = False,
) -> list[dict]:  # fmt: skip
    """The whole network on the sequencer; returns one row per stage (cycles, predictions).

    `step`: pause after every stage and check its output (else only the final map, and the counter
    against the simulation time). `host_input`: write the input map through the host port.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rom = folder / "rom"
    network = write_memory_images(model, to_bytes(model), rom, ["hex"])["network"]
    assert network["sequenced"], network
    gold = golden.run(model, pixels, taps=True)
    x0 = golden.subtract_mean(pixels, model.input_mean).astype(np.int16)  # SPEC 4.1
    np.save(folder / "input.npy", x0)
    save_input_hex(folder / "input.hex", x0)
    model_rows = network_cycles(model, lanes, scan_w)
    stages = []
    for number, row in enumerate(network["stages"]):
        last = row["layer"] + (1 if row["pool"] else 0)  # the stage's output is this layer's
        np.save(folder / f"stage{number:02d}.npy", gold[last])
        label = f"{row['conv']}{' + ' + row['pooled_by'] if row['pooled_by'] else ''} {row['height']}x{row['width']}"
        stages.append({"label": label, "expected_npy": str(folder / f"stage{number:02d}.npy")})
    started = time.perf_counter()
    build = build_once(simulator, "chipq_network", network_parameters(model, network, lanes, scan_w))
    built = time.perf_counter()
    plusargs = [f"+{name.upper()}_HEX={rom / info['file']}" for name, info in network["banks"].items()]
    if not host_input:
        plusargs.append(f"+IN_HEX={folder / 'input.hex'}")
    case = {"stages": stages, "step": step, "host_input": host_input, "input_npy": str(folder / "input.npy"),
            "result_file": str(folder / "result.json")}  # fmt: skip
    run_built(simulator, "chipq_network", build, "tb_network", folder / "sim", case=case, plusargs=plusargs)
    result = json.loads((folder / "result.json").read_text())
    predicted = [row["cycles"] for row in model_rows]
    assert result["total"] == sum(predicted), (result["total"], sum(predicted))
    measured = np.diff([0, *result["counters"]]).tolist() if step else [None] * len(model_rows)
    if step:
        assert measured == predicted, (measured, predicted)
    rows = []
    for row, cycles in zip(model_rows, measured):
        layer = model.layers[[layer.name for layer in model.layers].index(row["conv"])]
        height, width = map(int, row["map"].split("x"))
        macs = layer.kept_kernels() * C.KERNEL_TAPS * height * width
        rows.append({"layer": row["conv"] + (f" + {row['pool']}" if row["pool"] else ""), "map": row["map"], "macs": macs,
                     "cycles": cycles, "schedule_cycles": row["cycles"], "cost_model_cycles": -(-macs // (lanes * C.KERNEL_TAPS))})  # fmt: skip
    rows[0]["seconds"] = {"build": built - started, "run": time.perf_counter() - built}
    rows[0]["measured_total"] = result["total"]
    return rows


def cycle_table(rows: list[dict]) -> str:
    """A Markdown table of the run: measured cycles per stage beside the schedule model and the cost model."""
    lines = ["| stage | conv input map | MACs | RTL cycles | schedule model | cost model (MACs / (LANES*9)) | RTL / cost model |",
             "| :--- | :--- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for row in rows:
        cycles = "-" if row["cycles"] is None else f"{row['cycles']:,}"
        ratio = f"{row['schedule_cycles'] / row['cost_model_cycles']:.2f}x" if row["cost_model_cycles"] else "-"
        lines.append(f"| {row['layer']} | {row['map']} | {row['macs']:,} | {cycles} | {row['schedule_cycles']:,} | "
                     f"{row['cost_model_cycles']:,} | {ratio} |")  # fmt: skip
    total = {key: sum(row[key] or 0 for row in rows) for key in ("macs", "schedule_cycles", "cost_model_cycles")}
    total["cycles"] = rows[0]["measured_total"]  # the counter at done (also when no stage was read)
    lines.append(f"| total | | {total['macs']:,} | {total['cycles']:,} | {total['schedule_cycles']:,} | "
                 f"{total['cost_model_cycles']:,} | {total['schedule_cycles'] / max(1, total['cost_model_cycles']):.2f}x |")  # fmt: skip
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

    parser = argparse.ArgumentParser(description="BLOB on the RTL layer sequencer, one start pulse, on a crop of a real photo")
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
    rows = run_network(crop_model(chip, args.side), crop, args.work, args.lanes, simulator=args.simulator)
    print(cycle_table(rows))
    print("seconds:", {key: round(value, 1) for key, value in rows[0]["seconds"].items()})
    sys.exit(0)
