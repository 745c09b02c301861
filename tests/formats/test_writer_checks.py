"""The writer refuses every model the reader would refuse, naming the layer, field and value."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from chipq.formats import constants as C
from chipq.formats import errors as E
from chipq.formats.model import ChipModel, ConvLayer, PoolLayer
from chipq.formats.writer import accumulator_bound, to_bytes


def with_conv(model: ChipModel, index: int, **fields) -> ChipModel:
    layers = list(model.layers)
    layers[index] = replace(layers[index], **fields)
    return replace(model, layers=tuple(layers))


def test_mask_bits_out_of_range_names_layer_and_value(tiny_model):
    with pytest.raises(E.FieldOutOfRange, match=r"^layer conv2_1: mask_bits 7 not in 1..5$"):
        to_bytes(with_conv(tiny_model, 2, mask_bits=7))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("weight_shift", 16, "weight_shift 16 not in 0..15"),
        ("bias_shift", 32, "bias_shift 32 not in 0..31"),
        ("out_shift", -1, "out_shift -1 not in 0..31"),
    ],
)
def test_shift_ranges(tiny_model, field, value, message):
    with pytest.raises(E.FieldOutOfRange, match=message):
        to_bytes(with_conv(tiny_model, 0, **{field: value}))


def test_array_values_out_of_range(tiny_model):
    conv = tiny_model.layers[0]
    mask = conv.mask.copy()
    mask[0, 0, 0, 0] = 8  # 3-bit codes stop at 7
    with pytest.raises(E.FieldOutOfRange, match=r"conv1_1: mask values 0..8 not in 0..7"):
        to_bytes(with_conv(tiny_model, 0, mask=mask))
    bias = conv.bias.astype(np.int32)
    bias[0] = 2048
    with pytest.raises(E.FieldOutOfRange, match=r"bias values .*2048 not in -2048..2047"):
        to_bytes(with_conv(tiny_model, 0, bias=bias))
    with pytest.raises(E.FieldOutOfRange, match="alpha must be an integer numpy array, got float32"):
        to_bytes(with_conv(tiny_model, 0, alpha=conv.alpha.astype(np.float32)))


def test_array_shapes_must_agree(tiny_model):
    conv = tiny_model.layers[0]
    with pytest.raises(E.ShapeMismatch, match=r"conv1_1: bias has shape \(3,\), expected \(4,\)"):
        to_bytes(with_conv(tiny_model, 0, bias=conv.bias[:3]))
    with pytest.raises(E.ShapeMismatch, match="mask has shape"):
        to_bytes(with_conv(tiny_model, 0, mask=conv.mask[:, :, :2]))


@pytest.mark.parametrize("name", ["", "a" * 16, "conv 1", "conv\u00e91", "x\0"])
def test_bad_names(tiny_model, name):
    with pytest.raises(E.BadLayerName, match="layer 0: name"):
        to_bytes(with_conv(tiny_model, 0, name=name))


def test_duplicate_names(tiny_model):
    with pytest.raises(E.DuplicateLayerName, match="layer 2: name conv1_1 already used"):
        to_bytes(with_conv(tiny_model, 2, name="conv1_1"))


def test_chain_rules(tiny_model):
    pool_first = replace(tiny_model, layers=tiny_model.layers[1:])
    with pytest.raises(E.ChainMismatch, match="first layer must be a conv"):
        to_bytes(pool_first)
    wrong_pool = with_conv(tiny_model, 1, channels=5)
    with pytest.raises(E.ChainMismatch, match="layer pool1: in_channels 5, but the previous layer gives 4"):
        to_bytes(wrong_pool)
    no_room = replace(tiny_model, input_height=1)
    with pytest.raises(E.MapTooSmall, match="pool1: max-pool gets a 1x16 map"):
        to_bytes(no_room)


def test_input_fields(tiny_model):
    with pytest.raises(E.BadHeaderField, match="input_width 4097"):
        to_bytes(replace(tiny_model, input_width=4097))
    with pytest.raises(E.BadHeaderField, match="input_mean"):
        to_bytes(replace(tiny_model, input_mean=(0, 256, 0)))


def test_layer_count_cap():
    alpha, mask, bias = np.ones((3, 3), np.uint8), np.zeros((3, 3, 3, 3), np.uint8), np.zeros(3, np.int16)
    conv = ConvLayer("c", 1, 0, 0, 0, alpha, mask, bias)
    layers = tuple(replace(conv, name=f"c{i}") for i in range(C.MAX_LAYERS + 1))
    with pytest.raises(E.BadLayerCount, match="65 layers, not 1..64"):
        to_bytes(ChipModel(8, 8, C.ChannelOrder.RGB, (0, 0, 0), layers))
    to_bytes(ChipModel(8, 8, C.ChannelOrder.RGB, (0, 0, 0), layers[:64]))  # 64 is allowed


def overflow_conv(**fields) -> ConvLayer:
    """One 3->1 conv whose accumulator bound is easy to compute by hand."""
    base = dict(
        name="conv1_1",
        mask_bits=5,
        weight_shift=0,
        bias_shift=0,
        out_shift=0,
        alpha=np.full((1, 3), 255, np.uint8),
        mask=np.full((1, 3, 3, 3), 31, np.uint8),  # code 31 -> M = 31
        bias=np.array([0], np.int16),
    )
    base.update(fields)
    return ConvLayer(**base)


def test_accumulator_bound_by_hand():
    # X = max(124, 255 - 104) = 151; sum|W| = 27 * 255 * 31; bias 2047 << 20; rounding 2^4.
    conv = overflow_conv(bias=np.array([-2047], np.int16), bias_shift=20, out_shift=5)
    model = ChipModel(8, 8, C.ChannelOrder.RGB, (124, 116, 104), (conv,))
    assert accumulator_bound(model) == [2047 * 2**20 + 151 * 27 * 255 * 31 + 16]


def test_accumulator_overflow_is_refused():
    # bias 2047 << 20 alone is 2,146,435,072; the weights' 151 * 27 * 255 * 31 = 32,228,685 push it
    # past 2^31 - 1 = 2,147,483,647.
    conv = overflow_conv(bias=np.array([2047], np.int16), bias_shift=20)
    model = ChipModel(8, 8, C.ChannelOrder.RGB, (124, 116, 104), (conv,))
    message = r"layer conv1_1: worst-case accumulator 2178663757 exceeds 2147483647"
    with pytest.raises(E.AccumulatorOverflow, match=message):
        to_bytes(model)
    # One step down is written: bias_shift 19 gives 1,073,217,536 + 32,228,685 = 1,105,446,221.
    to_bytes(ChipModel(8, 8, C.ChannelOrder.RGB, (124, 116, 104), (replace(conv, bias_shift=19),)))


def test_later_layers_use_the_uint8_bound():
    conv2 = overflow_conv(
        name="conv1_2", alpha=np.full((1, 1), 255, np.uint8), mask=np.full((1, 1, 3, 3), 31, np.uint8)
    )
    first = overflow_conv(alpha=np.ones((1, 3), np.uint8))
    model = ChipModel(8, 8, C.ChannelOrder.RGB, (128, 128, 128), (first, conv2))
    assert accumulator_bound(model) == [128 * 27 * 31, 255 * 9 * 255 * 31]


def test_pool_layers_cannot_carry_conv_fields(tiny_model):
    assert isinstance(tiny_model.layers[1], PoolLayer)
    with pytest.raises(E.FieldOutOfRange, match="pool1: in_channels 0 not in 1..4096"):
        to_bytes(with_conv(replace(tiny_model, layers=tiny_model.layers[:2]), 1, channels=0))
