"""The exported C model: builds warning-free, equals the golden executor on every element, refuses bad input.

Random models come from `chipq.formats.synthetic.random_model` with their shifts, means and channel
order varied by hypothesis; every layer's whole map is compared with `chipq.executor.golden`.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cmodel_build import WARNINGS, make
from cmodel_run import assert_equal_to_golden, read_outputs, run_and_compare, run_c
from helpers import REPO
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chipq.export.c_model import SOURCES
from chipq.formats import constants as C
from chipq.formats import errors as E
from chipq.formats.model import ChipModel, ConvLayer
from chipq.formats.reader import from_bytes
from chipq.formats.synthetic import random_model
from chipq.formats.writer import to_bytes

TINY = REPO / "samples" / "tiny.blob"


def test_the_export_holds_sources_makefile_spec_and_manifest(c_export):
    built = {"chipq_ref", "chipq_example", "chipq.o", "libchipq.a"}
    names = sorted(p.name for p in c_export.iterdir() if p.name not in built)
    assert names == ["Makefile", "README.md", "SPEC.md", "chipq-export.json", "chipq.c", "chipq.h", "chipq_example.c", "chipq_ref.c"]
    assert (c_export / "SPEC.md").read_text() == (REPO / "formats" / "SPEC.md").read_text()
    assert (c_export / "chipq_ref.c").read_bytes() == (REPO / "compressor" / "export" / "c" / "chipq_ref.c").read_bytes()
    manifest = json.loads((c_export / "chipq-export.json").read_text())
    assert [row["file"] for row in manifest["layers"]] == ["00_conv1_1.u8", "01_pool1.u8", "02_conv2_1.u8"]
    assert manifest["input"] == {"shape": [3, 32, 32], "channel_order": "RGB", "mean": list(from_bytes(TINY.read_bytes()).input_mean)}


def test_builds_warning_free_with_werror(c_export, tmp_path):
    """-std=c99 -O2 -Wall -Wextra -pedantic plus -Werror: no warning at all (the default build is checked too)."""
    for name in SOURCES:
        (tmp_path / name).write_bytes((c_export / name).read_bytes())
    done = make(tmp_path, f"CFLAGS={WARNINGS} -Werror -Wshadow -Wstrict-prototypes")
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_the_sample_blob_equals_golden(chipq_ref, tmp_path):
    model = from_bytes(TINY.read_bytes())
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)
    run_and_compare(chipq_ref, model, TINY.read_bytes(), pixels, tmp_path)


# --- random models --------------------------------------------------------------------------------


@st.composite
def models(draw) -> ChipModel:
    """A random valid model: 1..3 blocks of 1..2 convs of 1..9 channels, 1..5-bit masks, pools between
    blocks, input 1..19 x 1..19 (pools only where the map stays at least 2x2), random mean and order,
    and each conv's bias_shift and out_shift redrawn over their whole range when the SPEC 4.5 bound allows."""
    height, width = draw(st.integers(1, 19)), draw(st.integers(1, 19))
    config: list[int | str] = []
    h, w = height, width
    for block in range(draw(st.integers(1, 3))):
        if block:
            if h < 2 or w < 2:
                break
            config.append("M")
            h, w = h // 2, w // 2
        config += [draw(st.integers(1, 9)) for _ in range(draw(st.integers(1, 2)))]
    convs = sum(1 for entry in config if entry != "M")
    bits = draw(st.lists(st.integers(1, 5), min_size=convs, max_size=convs))
    mean = tuple(draw(st.lists(st.integers(0, 255), min_size=3, max_size=3)))
    order = draw(st.sampled_from(list(C.ChannelOrder)))
    model = random_model(bits, config, (height, width), seed=draw(st.integers(0, 2**32 - 1)), input_mean=mean, channel_order=order)
    layers = []
    for layer in model.layers:
        if isinstance(layer, ConvLayer) and draw(st.booleans()):
            layer = replace(layer, out_shift=draw(st.integers(0, C.OUT_SHIFT_MAX)), bias_shift=draw(st.integers(0, 12)))
        layers.append(layer)
    return replace(model, layers=tuple(layers))


@st.composite
def images(draw, model: ChipModel) -> np.ndarray:
    shape = (3, model.input_height, model.input_width)
    kind = draw(st.sampled_from(["random", "black", "white", "extremes"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "black":
        return np.zeros(shape, np.uint8)
    if kind == "white":
        return np.full(shape, 255, np.uint8)
    if kind == "extremes":  # only 0 and 255: the largest |pixel - mean| everywhere
        return (rng.integers(0, 2, shape) * 255).astype(np.uint8)
    return rng.integers(0, 256, shape, dtype=np.uint8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_models_equal_golden_on_every_element(chipq_ref, tmp_path, data):
    model = data.draw(models())
    try:
        blob = to_bytes(model)
    except E.AccumulatorOverflow:  # a redrawn shift broke SPEC 4.5: not a blob
        assume(False)
    pixels = data.draw(images(model))
    run_and_compare(chipq_ref, model, blob, pixels, tmp_path / "case")


def test_the_accumulator_bound_edge_equals_golden(chipq_ref, tmp_path):
    """A conv whose SPEC 4.5 bound is exactly 2^31 - 1, on the pixels that reach it (and random ones)."""
    mask = np.full((4, 3, 3, 3), 16, np.uint8)  # 5-bit code 16 -> M = 1; code 27 -> M = 23; 0 -> -31
    mask[0, 0, 1, 1] = 27
    mask[1] = 0
    conv = ConvLayer(
        name="conv1_1", mask_bits=5, weight_shift=0, bias_shift=20, out_shift=0,
        alpha=np.array([[165, 0, 0], [1, 1, 1], [255, 255, 255], [1, 2, 3]], np.uint8),
        mask=mask, bias=np.array([-2047, 2047, 0, -5], np.int16),
    )  # fmt: skip
    model = ChipModel(4, 5, C.ChannelOrder.RGB, (50, 50, 50), (conv,))
    blob = to_bytes(model)
    assert from_bytes(blob) == model
    for index, pixels in enumerate([np.full((3, 4, 5), 255, np.uint8), np.zeros((3, 4, 5), np.uint8),
                                    np.random.default_rng(1).integers(0, 256, (3, 4, 5), dtype=np.uint8)]):  # fmt: skip
        run_and_compare(chipq_ref, model, blob, pixels, tmp_path / str(index))


def test_every_out_shift_rounds_half_up_like_golden(chipq_ref, tmp_path):
    """One 1x1 map per out_shift 0..31: each accumulator value hits a different rounding case."""
    rng = np.random.default_rng(2)
    base = random_model([4, 2], [6, "M", 5], input_hw=(6, 7), seed=5)
    for shift in range(C.OUT_SHIFT_MAX + 1):
        layers = tuple(replace(layer, out_shift=shift) if isinstance(layer, ConvLayer) else layer for layer in base.layers)
        model = replace(base, layers=layers)
        pixels = rng.integers(0, 256, (3, 6, 7), dtype=np.uint8)
        run_and_compare(chipq_ref, model, to_bytes(model), pixels, tmp_path / str(shift))


# --- bad input ------------------------------------------------------------------------------------


def refused(done: subprocess.CompletedProcess, error: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"chipq_ref: {error}: "), done.stderr
    return lines[0]


@pytest.fixture
def pixels32(tmp_path) -> Path:
    path = tmp_path / "px.u8"
    np.zeros((3, 32, 32), np.uint8).tofile(path)
    return path


def test_a_wrong_size_pixel_file_is_refused(chipq_ref, tmp_path):
    for size, word in ((3 * 32 * 32 - 1, "only"), (3 * 32 * 32 + 1, "more than"), (0, "only")):
        path = tmp_path / f"px{size}.u8"
        path.write_bytes(bytes(size))
        message = refused(run_c(chipq_ref, TINY, path, tmp_path / "out"), "BadPixels")
        assert word in message and "3x32x32 = 3072" in message
    refused(run_c(chipq_ref, TINY, tmp_path / "missing.u8", tmp_path / "out"), "PixelsUnreadable")
    assert not (tmp_path / "out").exists()  # nothing is written before every input is good


def test_an_unwritable_outdir_is_refused(chipq_ref, tmp_path, pixels32):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    refused(run_c(chipq_ref, TINY, pixels32, a_file), "OutputUnwritable")
    refused(run_c(chipq_ref, TINY, pixels32, a_file / "sub"), "OutputUnwritable")
    refused(run_c(chipq_ref, TINY, pixels32, tmp_path / "no" / "such" / "parent"), "OutputUnwritable")


def test_a_bad_blob_is_refused_before_anything_is_written(chipq_ref, tmp_path, pixels32):
    data = bytearray(TINY.read_bytes())
    data[300] ^= 1  # inside conv1_1's payload: its CRC no longer matches
    bad = tmp_path / "bad.blob"
    bad.write_bytes(bytes(data))
    with pytest.raises(E.PayloadCrcMismatch):
        from_bytes(bytes(data))
    refused(run_c(chipq_ref, bad, pixels32, tmp_path / "out"), "PayloadCrcMismatch")
    refused(run_c(chipq_ref, tmp_path / "missing.blob", pixels32, tmp_path / "out"), "BlobUnreadable")
    refused(run_c(chipq_ref, tmp_path, pixels32, tmp_path / "out"), "BlobUnreadable")  # a folder
    assert not (tmp_path / "out").exists()


def test_usage_errors_exit_2(chipq_ref, tmp_path):
    for args in ([], ["a"], ["a", "b"], ["a", "b", "c", "d"], ["--bogus", "b", "c"]):
        refused(subprocess.run([str(chipq_ref), *args], capture_output=True, text=True), "UsageError")


def test_check_mode(chipq_ref, tmp_path):
    bad = tmp_path / "short.blob"
    bad.write_bytes(TINY.read_bytes()[:100])
    done = subprocess.run([str(chipq_ref), "--check", str(TINY)], capture_output=True, text=True)
    assert done.returncode == 0 and "ok, 3 layers, input 32x32" in done.stdout
    refused(subprocess.run([str(chipq_ref), "--check", str(bad)], capture_output=True, text=True), "TruncatedFile")
    done = subprocess.run([str(chipq_ref), "--check", str(TINY), str(bad), str(TINY)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == ""
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and lines[1].startswith(f"{bad}: TruncatedFile: header says 768 bytes")
    assert lines[0].startswith(f"{TINY}: ok") and lines[2].startswith(f"{TINY}: ok")


def test_outputs_replace_earlier_ones_whole(chipq_ref, tmp_path, pixels32):
    out = tmp_path / "out"
    out.mkdir()
    (out / "00_conv1_1.u8").write_bytes(b"stale")
    done = run_c(chipq_ref, TINY, pixels32, out)
    assert done.returncode == 0, done.stderr
    model = from_bytes(TINY.read_bytes())
    assert_equal_to_golden(model, np.zeros((3, 32, 32), np.uint8), read_outputs(model, out))
    assert not list(out.glob("*.tmp")) and not list(out.glob(".chipq_ref*"))
