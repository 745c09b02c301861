"""The golden executor against SPEC.md section 4, written out by hand on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest

from chipq.executor import golden
from chipq.formats.model import ConvLayer


def _conv(alpha, codes, bias, bits=1, bias_shift=0, out_shift=0, name="c"):
    return ConvLayer(
        name, bits, 0, bias_shift, out_shift,
        np.asarray(alpha, np.uint8), np.asarray(codes, np.uint8), np.asarray(bias, np.int16),
    )


def test_conv_single_tap_matches_hand_sum():
    # one input channel, one output channel, 1-bit mask all +1 (code 1): a 3x3 box sum times alpha
    layer = _conv([[2]], np.ones((1, 1, 3, 3)), [5], bias_shift=1)
    x = np.arange(9, dtype=np.int64).reshape(1, 3, 3)
    acc = golden.conv3x3_accumulate(x, layer)
    # centre: all nine inputs (sum 36) * 2 + (5 << 1)
    assert acc[0, 1, 1] == 36 * 2 + 10
    # corner (0, 0): zero padding leaves x[0:2, 0:2] = 0 + 1 + 3 + 4
    assert acc[0, 0, 0] == 8 * 2 + 10


def test_mask_code_zero_is_minus_top_level():
    layer = _conv([[1]], np.zeros((1, 1, 3, 3)), [0], bits=3)  # code 0 -> M = -7
    x = np.zeros((1, 3, 3), np.int64)
    x[0, 1, 1] = 1
    assert golden.conv3x3_accumulate(x, layer)[0, 1, 1] == -7


@pytest.mark.parametrize(
    "acc, shift, expected",
    [
        (5, 1, 3),  # 2.5 rounds half up to 3
        (-5, 1, 0),  # -2.5 rounds to -2, then ReLU
        (3, 2, 1),  # 0.75 -> 1
        (1, 2, 0),  # 0.25 -> 0
        (2, 2, 1),  # 0.5 -> 1 (half up)
        (1000, 0, 255),  # saturates
        (-1, 0, 0),  # ReLU
        (511, 1, 255),  # 255.5 -> 256 -> 255
    ],
)
def test_requantize_rounds_half_up_then_relu_and_saturates(acc, shift, expected):
    assert golden.requantize(np.array([acc], np.int64), shift).tolist() == [expected]


def test_maxpool_floors_odd_sizes():
    x = np.arange(15, dtype=np.uint8).reshape(1, 3, 5)
    out = golden.maxpool2x2(x)
    assert out.shape == (1, 1, 2)
    assert out.tolist() == [[[6, 8]]]


def test_subtract_mean_is_signed():
    pixels = np.array([[[0]], [[255]], [[104]]], np.uint8)
    x0 = golden.subtract_mean(pixels, (124, 116, 104))
    assert x0.ravel().tolist() == [-124, 139, 0]


def test_overflowing_accumulator_is_refused():
    layer = _conv([[255]], np.ones((1, 1, 3, 3)), [2047], bias_shift=31)
    acc = golden.conv3x3_accumulate(np.zeros((1, 2, 2), np.int64), layer)
    with pytest.raises(golden.AccumulatorOutOfRange, match="layer c"):
        golden.check_accumulator(acc, layer)


def test_run_returns_every_layer_with_taps(tiny_model):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    outs = golden.run(tiny_model, pixels, taps=True)
    assert [o.shape for o in outs] == [(4, 16, 16), (4, 8, 8), (8, 8, 8)]
    assert all(o.dtype == np.uint8 for o in outs)
    assert np.array_equal(golden.run(tiny_model, pixels), outs[-1])


def test_channel_count_mismatch_is_reported():
    layer = _conv(np.ones((1, 2)), np.ones((1, 2, 3, 3)), [0])
    with pytest.raises(ValueError, match="expects 2"):
        golden.conv3x3_accumulate(np.zeros((3, 4, 4), np.int64), layer)


def test_golden_executor_has_the_fast_interface(tiny_model):
    """`GoldenExecutor.run` takes a batch like `FastExecutor.run` and returns the same shapes and values."""
    from chipq.executor.fast import FastExecutor
    from chipq.executor.golden import GoldenExecutor

    images = np.random.default_rng(3).integers(0, 256, (3, 3, 16, 16), dtype=np.uint8)
    gold, fast = GoldenExecutor(tiny_model), FastExecutor(tiny_model)
    peaks: list[int] = []
    gold_taps, fast_taps = gold.run(images, taps=True, peaks=peaks), fast.run(images, taps=True)
    assert len(peaks) == 3 * len(tiny_model.conv_layers())
    assert [t.shape for t in gold_taps] == [t.shape for t in fast_taps]
    for g, f in zip(gold_taps, fast_taps):
        assert g.dtype == np.uint8
        np.testing.assert_array_equal(g, f)
    np.testing.assert_array_equal(gold.run(images), fast.run(images))
