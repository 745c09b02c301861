"""The int8 route's pieces: the plan and its bounds, rounding, pooling, the first layer, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chipq.executor import golden, int8
from chipq.executor.fast import FastExecutor, _FloatStep
from chipq.executor.selftest import int8_matches_golden
from chipq.formats import constants as C
from chipq.formats.model import ChipModel, ConvLayer
from chipq.formats.synthetic import random_model

CAP = int8.probe()
needs_int8 = pytest.mark.skipif(CAP is None, reason="oneDNN int8 convolution not usable on this machine")


def layer_with(alpha, codes, bits=5, bias=None, bias_shift=0, out_shift=12, name="conv1_2"):
    out_channels = alpha.shape[0]
    bias = np.zeros(out_channels, np.int16) if bias is None else np.asarray(bias, np.int16)
    return ConvLayer(name, bits, 0, bias_shift, out_shift, alpha.astype(np.uint8), codes.astype(np.uint8), bias)


def assert_equals_golden(executor, model, images):
    taps = executor.run(images, taps=True)
    for index, image in enumerate(images):
        for got, want in zip(taps, golden.run(model, image, taps=True)):
            np.testing.assert_array_equal(got[index], want)


def test_probe_reports_a_known_range():
    assert CAP in (127, 63, None)


@needs_int8
def test_self_test_passes_here():
    assert int8_matches_golden(CAP)


def test_plan_splits_only_channels_that_do_not_fit():
    rng = np.random.default_rng(0)
    weights = rng.integers(-100, 101, (6, 4, 3, 3)).astype(np.int64)
    weights[2, 1, 0, 0] = 1785  # only channels 2 and 5 leave [-127, 127]
    weights[5, 3, 2, 2] = -900
    layer = layer_with(np.ones((6, 4)), np.zeros((6, 4, 3, 3)), out_shift=10)
    plan = int8.plan_conv(layer, weights, 255, 127, None)
    assert list(plan.single) == [0, 1, 3, 4] and list(plan.double) == [2, 5]
    high, low = int8.split(weights[plan.double], plan.split_bits)
    np.testing.assert_array_equal((high << plan.split_bits) + low, weights[plan.double])
    assert np.abs(low).max() <= 1 << (plan.split_bits - 1) and np.abs(high).max() <= 127
    # the bounds the exactness argument needs (int8 module docstring)
    assert (255 * np.abs(high).reshape(2, -1).sum(1)).max() < 1 << 24
    assert (255 * np.abs(low).reshape(2, -1).sum(1) + np.abs(plan.offset[plan.double]) + (1 << 10)).max() < 1 << 23


def test_plan_refuses_an_offset_the_uint8_rounding_cannot_carry():
    weights = np.ones((2, 2, 3, 3), np.int64)
    layer = layer_with(np.ones((2, 2)), np.zeros((2, 2, 3, 3)), bias=[2047, 0], bias_shift=12, out_shift=4)
    assert int8.plan_conv(layer, weights, 255, 127, None) is None


@needs_int8
def test_layer_failing_the_plan_runs_on_the_float_route_and_stays_exact():
    rng = np.random.default_rng(1)
    first = layer_with(rng.integers(1, 40, (4, 3)), rng.integers(0, 32, (4, 3, 3, 3)), name="conv1_1", out_shift=9)
    # out_shift 4 with bias 2047 << 12: |off| >= 2^(s+8), outside the uint8 rounding's reach
    second = layer_with(
        rng.integers(1, 255, (5, 4)), rng.integers(0, 32, (5, 4, 3, 3)), bias=[2047, -2048, 5, 0, -7],
        bias_shift=12, out_shift=4,
    )
    model = ChipModel(8, 8, C.ChannelOrder.RGB, (124, 116, 104), (first, second))
    executor = FastExecutor.with_cap(model, CAP)
    assert isinstance(executor.steps[1][0], _FloatStep)
    images = rng.integers(0, 256, (3, 3, 8, 8), dtype=np.uint8)
    images[0] = 255
    assert_equals_golden(executor, model, images)


@needs_int8
@pytest.mark.parametrize("cap", [127, 63])
@pytest.mark.parametrize("sign", [1, -1])
def test_worst_case_weights_and_pixels(cap, sign):
    """alpha 255 with 5-bit masks at the extreme levels: two pieces everywhere, accumulators near
    the proven bound, outputs saturating at both ends."""
    alpha = np.full((4, 3), 255)
    codes = np.full((4, 3, 3, 3), 31 if sign > 0 else 0)
    codes[1] = 0 if sign > 0 else 31
    codes[2, :, 1] = 15  # M = -1 on the middle row
    first = layer_with(alpha, codes, name="conv1_1", out_shift=15, bias=[2047, -2048, 0, 100], bias_shift=3)
    alpha2 = np.full((6, 4), 255)
    codes2 = np.where(np.arange(6 * 4 * 9).reshape(6, 4, 3, 3) % 3 == 0, 0, 31)
    second = layer_with(alpha2, codes2, name="conv1_2", out_shift=15)
    model = ChipModel(6, 5, C.ChannelOrder.RGB, (124, 116, 104), (first, second))
    executor = FastExecutor.with_cap(model, cap)
    images = np.stack([np.full((3, 6, 5), 255), np.zeros((3, 6, 5)), np.indices((3, 6, 5)).sum(0) % 2 * 255])
    assert_equals_golden(executor, model, images.astype(np.uint8))


@needs_int8
def test_first_layer_on_both_of_its_paths():
    small = random_model([1, 3], [8, 8], input_hw=(7, 9), seed=4)
    rng = np.random.default_rng(3)
    wide = layer_with(rng.integers(100, 256, (8, 3)), rng.integers(0, 32, (8, 3, 3, 3)), name="conv1_1", out_shift=14)
    big = ChipModel(7, 9, C.ChannelOrder.BGR, (104, 116, 124), (wide, small.layers[1]))
    assert isinstance(FastExecutor.with_cap(small, CAP).steps[0][0], int8.FirstLayerFloat)
    assert isinstance(FastExecutor.with_cap(big, CAP).steps[0][0], int8.Int8Conv)  # sum|W| too large for float
    images = np.random.default_rng(2).integers(0, 256, (2, 3, 7, 9), dtype=np.uint8)
    images[1, 0] = 0
    images[1, 1:] = 255
    for model in (small, big):
        assert_equals_golden(FastExecutor.with_cap(model, CAP), model, images)


def test_round_to_uint8_rounds_to_nearest_and_saturates():
    values = torch.tensor([-3.0, -0.4, 0.4, 0.6, 1.49, 254.6, 255.4, 300.0, 1e9]).reshape(1, 9, 1, 1)
    got = int8.round_to_uint8(values.contiguous(memory_format=torch.channels_last))
    assert got.dtype == torch.uint8
    assert got.flatten().tolist() == [0, 0, 0, 1, 1, 255, 255, 255, 255]
    assert int8.round_to_uint8(torch.tensor([[[[40.0]]]]), 8.0).item() == 5


@pytest.mark.parametrize("height,width", [(4, 4), (5, 7), (2, 3)])
def test_maxpool_matches_golden_and_keeps_the_layout(height, width):
    x = np.random.default_rng(height * width).integers(0, 256, (2, 6, height, width), dtype=np.uint8)
    t = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    got = int8.maxpool2x2(t)
    for index in range(2):
        np.testing.assert_array_equal(got[index].numpy(), golden.maxpool2x2(x[index]))


def test_pad_with_mean_borders_every_plane_with_its_mean():
    pixels = torch.from_numpy(np.arange(2 * 3 * 2 * 2, dtype=np.uint8).reshape(2, 3, 2, 2))
    padded = int8.pad_with_mean(pixels, (7, 8, 9))
    assert padded.shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(padded[:, :, 1:-1, 1:-1].numpy(), pixels.numpy())
    for plane, mean in enumerate((7, 8, 9)):
        border = padded[:, plane].numpy().copy()
        border[:, 1:-1, 1:-1] = mean
        assert (border == mean).all()


@needs_int8
def test_packed_weights_are_kept_for_a_few_input_shapes_only():
    model = random_model([5, 3], [8, 8], input_hw=(8, 8), seed=6)
    executor = FastExecutor.with_cap(model, CAP)
    rng = np.random.default_rng(5)
    for side in range(4, 4 + int8.PACKED_SHAPES + 3):
        images = rng.integers(0, 256, (1, 3, side, side + 1), dtype=np.uint8)
        assert_equals_golden(executor, model, images)
    for step, _ in executor.steps:
        if isinstance(step, int8.Int8Conv):
            assert len(step.packed) == int8.PACKED_SHAPES
