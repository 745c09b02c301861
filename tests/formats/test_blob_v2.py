"""Chip format v2 (SPEC 3.4 alpha width, 3.5 kernel presence): bytes, round trips, the writer's refusals.

The hostile reader cases live in test_reader_hostile_v2.py; this file pins what a valid v2 blob is.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chipq.executor import golden
from chipq.formats import constants as C
from chipq.formats import errors as E
from chipq.formats.model import ChipModel, ConvLayer
from chipq.formats.packing import conv_payload_size, pack_int12, pack_uint
from chipq.formats.reader import from_bytes, read_blob
from chipq.formats.synthetic import random_model
from chipq.formats.writer import conv_payload, to_bytes, write_blob

TINY = ([3, 2], [8, "M", 16])


def tiny(**v2) -> ChipModel:
    return random_model(*TINY, input_hw=(12, 10), seed=3, **v2)


def test_a_model_without_v2_features_is_written_as_v1():
    data = to_bytes(tiny())
    assert int.from_bytes(data[8:10], "little") == C.FORMAT_V1
    assert all(data[64 + 48 * k + 28 : 64 + 48 * k + 32] == bytes(4) for k in range(3))


@pytest.mark.parametrize("v2", [{"alpha_bits": 5}, {"keep": 0.5}, {"alpha_bits": [8, 3], "keep": [None, 0.4]}])
def test_any_v2_feature_makes_the_blob_v2_and_reads_back_equal(v2):
    model = tiny(**v2)
    data = to_bytes(model)
    assert int.from_bytes(data[8:10], "little") == C.FORMAT_V2
    back = from_bytes(data)
    assert back == model and to_bytes(back) == data
    for layer in back.conv_layers():  # v2 records carry the width and the flag
        assert sum(layer.region_sizes()) == conv_payload_size(
            layer.out_channels, layer.in_channels, layer.mask_bits, layer.alpha_bits,
            layer.kept_kernels() if layer.pruned else None,
        )  # fmt: skip


def test_v2_records_hold_alpha_bits_and_the_presence_flag():
    model = tiny(alpha_bits=[8, 3], keep=[None, 0.4])
    data = to_bytes(model)
    records = [data[64 + 48 * k : 64 + 48 * (k + 1)] for k in range(3)]
    assert (records[0][28], records[0][29]) == (8, 0)  # a v1-like conv inside a v2 blob
    assert (records[1][28], records[1][29]) == (0, 0)  # the pool
    assert (records[2][28], records[2][29]) == (3, int(C.LayerFlag.KERNEL_PRESENCE))


def test_payload_bytes_follow_spec_3_1_by_hand():
    # 2 out x 3 in, 1-bit masks, 3-bit alpha, kernels (0,1) and (1,2) absent: P = 4.
    present = np.array([[1, 0, 1], [1, 1, 0]], dtype=bool)
    codes = np.array([[7, 0, 1], [2, 5, 0]])
    mask = np.zeros((2, 3, 3, 3), dtype=np.uint8)
    mask[0, 0] = 1  # every tap of kernel (0,0) is +1
    mask[1, 1, 0, 0] = 1  # tap 0 of kernel (1,1)
    layer = ConvLayer(
        name="c", mask_bits=1, weight_shift=0, bias_shift=0, out_shift=0,
        alpha=(codes << 5).astype(np.uint8), mask=mask, bias=np.array([-1, 5], dtype=np.int16),
        alpha_bits=3, present=present,
    )  # fmt: skip
    presence = bytes([0b011101])  # bits k = o*I + i, LSB first: 1,0,1,1,1,0
    alpha = pack_uint(np.array([7, 1, 2, 5]), 3)  # the stored kernels in o-major order
    taps = np.zeros((4, 9), dtype=np.uint8)
    taps[0] = 1
    taps[3, 0] = 1  # stored kernel 3 is (1,1)
    assert conv_payload(layer) == presence + alpha + pack_int12(layer.bias) + pack_uint(taps, 1)
    assert len(conv_payload(layer)) == conv_payload_size(2, 3, 1, 3, 4) == 1 + 2 + 3 + 5


def test_v2_arithmetic_is_v1_arithmetic_on_the_decoded_arrays():
    """Golden runs a v2 layer exactly as the dense v1 layer with the same 8-bit alpha (SPEC 3.4, 3.5)."""
    model = from_bytes(to_bytes(tiny(alpha_bits=4, keep=0.5)))
    dense = replace(model, layers=tuple(
        replace(layer, alpha_bits=8, present=None) if isinstance(layer, ConvLayer) else layer for layer in model.layers
    ))  # fmt: skip
    assert dense.format_version() == C.FORMAT_V1
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 12, 10), dtype=np.uint8)
    assert np.array_equal(golden.run(model, pixels), golden.run(dense, pixels))


def test_a_layer_with_no_kernel_left_is_valid(tmp_path):
    model = tiny(keep=0.0)
    write_blob(model, tmp_path / "empty.blob")
    back = read_blob(tmp_path / "empty.blob")
    assert [layer.kept_kernels() for layer in back.conv_layers()] == [0, 0]
    assert back == model


def _with_second_conv(model: ChipModel, **fields) -> ChipModel:
    layers = list(model.layers)
    layers[2] = replace(layers[2], **fields)
    return replace(model, layers=tuple(layers))


@pytest.mark.parametrize("alpha_bits", [0, 9])
def test_writer_refuses_an_alpha_width_out_of_range(alpha_bits):
    with pytest.raises(E.FieldOutOfRange, match=f"alpha_bits {alpha_bits} not in 1..8"):
        to_bytes(_with_second_conv(tiny(), alpha_bits=alpha_bits))


def test_writer_refuses_alpha_off_the_narrow_grid():
    model = tiny(alpha_bits=4)
    layer = model.layers[2]
    alpha = layer.alpha.copy()
    alpha[0, 0] += 1
    with pytest.raises(E.FieldOutOfRange, match="multiples of 16 at 4-bit alpha"):
        to_bytes(_with_second_conv(model, alpha=alpha))


def test_writer_refuses_weight_on_an_absent_kernel():
    model = tiny(keep=0.5)
    layer = model.layers[2]
    absent = np.argwhere(~layer.present)[0]
    mask = layer.mask.copy()
    mask[tuple(absent)][0, 0] = 1
    with pytest.raises(E.FieldOutOfRange, match="absent kernel has a nonzero"):
        to_bytes(_with_second_conv(model, mask=mask))


@pytest.mark.parametrize(
    "present, error",
    [(np.ones((16, 8), dtype=np.uint8), E.FieldOutOfRange), (np.ones((8, 16), dtype=bool), E.ShapeMismatch)],
)
def test_writer_refuses_a_bad_presence_array(present, error):
    with pytest.raises(error, match="present"):
        to_bytes(_with_second_conv(tiny(keep=0.5), present=present))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    alpha_bits=st.lists(st.integers(1, 8), min_size=2, max_size=2),
    keep=st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=2, max_size=2),
)
def test_any_v2_model_round_trips(seed, alpha_bits, keep):
    model = random_model(*TINY, input_hw=(6, 6), seed=seed, alpha_bits=alpha_bits, keep=keep)
    data = to_bytes(model)
    assert from_bytes(data) == model
    first, second = (sum(layer.region_sizes()) for layer in model.conv_layers())
    assert len(data) == 64 + 3 * 48 + -(-first // 8) * 8 + second  # the second payload starts aligned
