"""rtl/chipq_conv_engine.v runs whole conv layers from the exported memory images, equal to golden.

Weights: `chipq export --format hex` images (`write_memory_images`). Input and expected output: the
`$readmemh` test vectors of `chipq verify --vectors-hex` (`write_vectors`, golden executor). The
synthetic cases run in every test session; the real VGG-16 ones (conv1_1 on a 16x16 crop of a real
photo, the 1-bit conv4_1 on a 4x4 map of real activations, and the same conv4_1 pruned to half its
kernels with 5-bit alpha, chip format v2) are marked slow. Every run's cycle count must equal the
engine's schedule (`engine_cycles`), which then reports what pruning saves on whole layers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from engine_cycles import SCAN_W, engine_cycles
from helpers import SAMPLES
from real_pruned import prune_model
from rtlsim import run_cocotb, verilog_string

from chipq.export.memimage import write_memory_images
from chipq.formats.model import ChipModel, ConvLayer
from chipq.formats.reader import from_bytes
from chipq.formats.synthetic import random_model
from chipq.formats.writer import to_bytes
from chipq.images import load_image, resize
from chipq.pipeline.verify import write_vectors

PHOTO = SAMPLES / "photos" / "china.jpg"
LANES = 16


def engine_case(
    model: ChipModel, pixels: np.ndarray, layer_index: int, folder: Path, label: str, lanes: int = LANES, scan_w: int = SCAN_W
):
    """Parameters and case data to run layer `layer_index` of `model` on `pixels` (uint8 (3, H, W))."""
    blob = to_bytes(model)
    mapping = write_memory_images(model, blob, folder / "rom", ["hex"])
    manifest = json.loads(write_vectors(model, pixels[None], [label], folder / "vectors", readmemh=True).read_text())
    vectors = manifest["images"][0]["layers"][layer_index]
    layer = model.layers[layer_index]
    assert isinstance(layer, ConvLayer)
    entry = mapping["layers"][layer_index]
    in_shape = np.load(folder / "vectors" / vectors["input"]).shape
    channels, height, width = in_shape
    banks = {bank: folder / "rom" / info["files"]["hex"] for bank, info in entry["banks"].items()}
    cycles = engine_cycles(layer, height, width, lanes, scan_w)
    parameters = {
        "LANES": lanes,
        "MAX_W": width,
        "MAX_HW": height * width,
        "IN_DEPTH": channels * height * width,
        "OUT_DEPTH": layer.out_channels * height * width,
        "K_DEPTH": max(1, layer.kept_kernels()),  # a ROM has at least one word
        "B_DEPTH": layer.out_channels,
        "ALPHA_HEX": verilog_string(banks["alpha"]),
        "BIAS_HEX": verilog_string(banks["bias"]),
        "MASK_HEX": verilog_string(banks["mask"]),
        "IN_HEX": verilog_string(folder / "vectors" / vectors["input_hex"]),
    }
    if layer.pruned:
        parameters["P_DEPTH"] = layer.out_channels * layer.in_channels
        parameters["SCAN_W"] = scan_w
        parameters["PRESENCE_HEX"] = verilog_string(banks["presence"])
    case = {
        "label": label,
        "in_ch": layer.in_channels,
        "out_ch": layer.out_channels,
        "h": height,
        "w": width,
        "m": layer.mask_bits,
        "alpha_bits": layer.alpha_bits,
        "pruned": int(layer.pruned),
        "bias_shift": layer.bias_shift,
        "out_shift": layer.out_shift,
        "expected_hex": str(folder / "vectors" / vectors["output_hex"]),
        "timeout_cycles": cycles["total"] + 100,
        "cycles_file": str(folder / "cycles.txt"),
    }
    return parameters, case, cycles


def run_engine(model, pixels, layer_index, folder, label, lanes: int = LANES, scan_w: int = SCAN_W) -> int:
    """Run one layer on the engine (every output equal to golden); returns its cycles, checked
    equal to the schedule model."""
    parameters, case, cycles = engine_case(model, pixels, layer_index, folder, label, lanes, scan_w)
    run_cocotb("chipq_conv_engine", "tb_engine", folder / "sim", parameters=parameters, case=case)
    measured = int((folder / "cycles.txt").read_text())
    assert measured == cycles["total"], (label, measured, cycles)
    return measured


@pytest.mark.parametrize("bits", [[3, 1], [5, 2]])
def test_engine_runs_synthetic_layers_equal_to_golden(tmp_path, bits):
    """conv1 (signed x0 input, 3- or 5-bit masks) and a conv after a pool (uint8 input), on a
    non-square map with output channels that do not fill the last lane group."""
    model = random_model(bits, [20, "M", 19], input_hw=(10, 14), seed=sum(bits))
    pixels = np.random.default_rng(3).integers(0, 256, (3, 10, 14), dtype=np.uint8)
    run_engine(model, pixels, 0, tmp_path / "conv1_1", "synthetic conv1_1")
    run_engine(model, pixels, 2, tmp_path / "conv2_1", "synthetic conv2_1")


@pytest.mark.parametrize(
    "alpha_bits, keep, lanes, scan_w",
    [
        ([5, 3], [0.5, 0.4], 4, 2),  # pruned, narrow alpha, lanes that do not divide O, rows in 2-bit chunks
        ([1, 8], [0.25, 0.0], 1, 32),  # one lane (no scan: the pointer runs on); conv2_1 has no kernel at all
        ([6, 2], [None, 0.15], 3, 3),  # narrow alpha without a bitmap; a sparse layer: planes skipped
    ],
)
def test_engine_runs_synthetic_v2_layers_equal_to_golden(tmp_path, alpha_bits, keep, lanes, scan_w):
    """Chip format v2 layers: the presence ROM steers the kernel fetch, absent kernels are skipped."""
    model = random_model([3, 2], [7, "M", 6], input_hw=(6, 9), seed=5, alpha_bits=alpha_bits, keep=keep)
    pixels = np.random.default_rng(4).integers(0, 256, (3, 6, 9), dtype=np.uint8)
    run_engine(model, pixels, 0, tmp_path / "conv1_1", "synthetic v2 conv1_1", lanes, scan_w)
    run_engine(model, pixels, 2, tmp_path / "conv2_1", "synthetic v2 conv2_1", lanes, scan_w)
    if keep[1] is not None and keep[1] < 0.2:  # the sparse conv2_1 had planes skipped (cycles checked above)
        assert engine_cycles(model.layers[2], 3, 4, lanes, scan_w)["planes_skipped"] > 0


@pytest.fixture(scope="module")
def real_model(real_vgg16_blob) -> ChipModel:
    return from_bytes(real_vgg16_blob)


def real_crop(model: ChipModel, side: int) -> np.ndarray:
    """A side x side centre crop of a real photo at the chip's input size (what the chip sees), (3, H, W).

    The photo is one of the calibration images; that does not matter here: this checks exactness.
    """
    image = resize(load_image(PHOTO), (model.input_height, model.input_width)).transpose(2, 0, 1)
    top = (model.input_height - side) // 2
    left = (model.input_width - side) // 2
    return np.ascontiguousarray(image[:, top : top + side, left : left + side])


@pytest.mark.slow
def test_engine_runs_real_conv1_1_on_a_16x16_crop_of_a_photo(real_model, tmp_path):
    run_engine(real_model, real_crop(real_model, 16), 0, tmp_path, "VGG-16 conv1_1, 16x16 photo crop")


@pytest.mark.slow
def test_engine_runs_real_1bit_conv4_1_on_real_activations(real_model, tmp_path):
    """The whole conv4_1 (1-bit masks, 256 -> 512) on its 4x4 input map for a 32x32 photo crop (golden
    pool3 output): 32 lane groups x 256 planes, about 370k cycles (an 8x8 map took 855k cycles and
    ten minutes on a busy machine; CI keeps the RTL tests under two minutes)."""
    index = [layer.name for layer in real_model.layers].index("conv4_1")
    assert real_model.layers[index].mask_bits == 1
    run_engine(real_model, real_crop(real_model, 32), index, tmp_path, "VGG-16 conv4_1, 4x4 real map")


@pytest.mark.slow
def test_engine_runs_real_pruned_conv4_1_on_real_activations(real_model, tmp_path):
    """Chip format v2 on a real layer: conv4_1 with its smaller-|alpha| half of kernels pruned and 5-bit
    alpha codes (`real_pruned.prune_model`), whole (256 -> 512), on its 4x4 input map for a 32x32
    photo crop; every output equal to golden, its cycles equal to the schedule model."""
    pruned = prune_model(real_model, keep=0.5, alpha_bits=5)
    index = [layer.name for layer in pruned.layers].index("conv4_1")
    layer = pruned.layers[index]
    assert layer.pruned and layer.alpha_bits == 5 and layer.kept_kernels() == layer.alpha.size // 2
    cycles = run_engine(pruned, real_crop(pruned, 32), index, tmp_path, "VGG-16 conv4_1 pruned to 50 %, 5-bit alpha, 4x4 real map")
    unpruned = engine_cycles(real_model.layers[index], 4, 4, LANES)["total"]
    print(f"conv4_1 4x4, {LANES} lanes: {cycles} cycles pruned, {unpruned} unpruned")
