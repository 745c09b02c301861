"""The C model on chip format v2: narrow alpha codes and kernel presence bitmaps, equal to golden.

A v2 conv layer stores alpha_bits-wide alpha codes (SPEC 3.4) and, with the KERNEL_PRESENCE flag, only
its present kernels (SPEC 3.5). `chipq_ref` must read them as the chip does and give the golden
executor's maps on every element; the plain build and the ASan + UBSan build both run here.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from cmodel_run import SANITIZER_ENV, run_and_compare
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chipq.formats import constants as C
from chipq.formats import errors as E
from chipq.formats.model import ConvLayer
from chipq.formats.reader import from_bytes
from chipq.formats.synthetic import random_model
from chipq.formats.writer import to_bytes


def test_the_brief_model_alpha_5_keep_half_equals_golden(chipq_ref, chipq_ref_asan, tmp_path):
    """`random_model(..., alpha_bits=5, keep=0.5)`: three convs, two pools, odd map, every layer v2."""
    model = random_model([3, 2, 1], [6, "M", 9, "M", 7], input_hw=(13, 11), seed=7, alpha_bits=5, keep=0.5)
    blob = to_bytes(model)
    assert from_bytes(blob) == model and int.from_bytes(blob[8:10], "little") == C.FORMAT_V2
    assert all(layer.pruned and 0 < layer.kept_kernels() < layer.alpha.size for layer in model.conv_layers())
    pixels = np.random.default_rng(1).integers(0, 256, (3, 13, 11), dtype=np.uint8)
    run_and_compare(chipq_ref, model, blob, pixels, tmp_path / "plain")
    run_and_compare(chipq_ref_asan, model, blob, pixels, tmp_path / "asan", env=SANITIZER_ENV)


@pytest.mark.parametrize(
    "alpha_bits, keep",
    [
        ((1, 8), (0.0, 1.0)),  # 1-bit codes with every kernel pruned; 8-bit codes with a full bitmap
        ((8, 1), (None, 0.3)),  # v1-layout layer beside a 1-bit pruned one, in a v2 blob
        ((4, 7), (None, None)),  # narrow alpha only, no bitmap
        ((8, 8), (0.9, 0.05)),  # bitmap only, 8-bit alpha
    ],
)
def test_edge_widths_and_densities_equal_golden(chipq_ref_asan, tmp_path, alpha_bits, keep):
    model = random_model([2, 5], [5, "M", 3], input_hw=(8, 9), seed=11, alpha_bits=alpha_bits, keep=keep)
    pixels = np.random.default_rng(2).integers(0, 256, (3, 8, 9), dtype=np.uint8)
    run_and_compare(chipq_ref_asan, model, to_bytes(model), pixels, tmp_path, env=SANITIZER_ENV)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_v2_models_equal_golden_on_every_element(chipq_ref, tmp_path, data):
    """Any mask width, alpha width 1..8 and keep share per conv (or no bitmap), shifts redrawn."""
    convs = data.draw(st.integers(1, 3))
    config: list[int | str] = []
    for index in range(convs):
        if index:
            config.append("M")
        config.append(data.draw(st.integers(1, 9)))
    side = 2 ** (convs - 1)
    height, width = data.draw(st.integers(side, side * 6)), data.draw(st.integers(side, side * 6))
    bits = data.draw(st.lists(st.integers(1, 5), min_size=convs, max_size=convs))
    alpha_bits = data.draw(st.lists(st.integers(C.MIN_ALPHA_BITS, C.ALPHA_BITS), min_size=convs, max_size=convs))
    keep = data.draw(st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=convs, max_size=convs))
    model = random_model(bits, config, (height, width), seed=data.draw(st.integers(0, 2**32 - 1)), alpha_bits=alpha_bits, keep=keep)
    layers = []
    for layer in model.layers:
        if isinstance(layer, ConvLayer) and data.draw(st.booleans()):
            layer = replace(layer, out_shift=data.draw(st.integers(0, C.OUT_SHIFT_MAX)))
        layers.append(layer)
    model = replace(model, layers=tuple(layers))
    try:
        blob = to_bytes(model)
    except E.AccumulatorOverflow:
        assume(False)
    pixels = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).integers(0, 256, (3, height, width), dtype=np.uint8)
    run_and_compare(chipq_ref, model, blob, pixels, tmp_path / "case")
