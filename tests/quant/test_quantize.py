"""Eq. 1 quantization: kernels, shifts, biases, the input fold, and a whole stack."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from floatcraft import random_stack
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from chipq.executor import golden
from chipq.floatnet.model import FloatConv
from chipq.formats import constants as C
from chipq.quant.quantize import (
    QuantizationError,
    dequantized_weights,
    fit_kernels,
    fold_input_normalisation,
    input_mean_int,
    quantize_bias,
    quantize_kernels,
    quantize_stack,
)

kernels = arrays(np.float64, (5, 9), elements=st.floats(-2, 2, allow_subnormal=False))


@settings(max_examples=50, deadline=None)
@given(kernels, st.integers(1, 5))
def test_fit_beats_the_max_abs_uniform_start(w, bits):
    """The fitted alpha*M is never worse than alpha = max|w|/top with nearest levels."""
    alpha, m = fit_kernels(w, bits)
    top = (1 << bits) - 1
    assert np.all(np.abs(m) <= top) and np.all(np.abs(m) % 2 == 1)
    naive_alpha = np.abs(w).max(axis=1) / top
    naive_m = np.clip(2 * np.floor(w / np.where(naive_alpha > 0, naive_alpha, 1)[:, None] / 2) + 1, -top, top)
    fitted = ((w - alpha[:, None] * m) ** 2).sum(axis=1)
    naive = ((w - naive_alpha[:, None] * naive_m) ** 2).sum(axis=1)
    assert np.all(fitted <= naive + 1e-12)


def test_one_bit_fit_is_sign_and_mean_abs():
    w = np.array([[0.5, -1.0, 0.25, 0, 0, 0, 0, 0, -0.25]])
    alpha, m = fit_kernels(w, 1)
    assert alpha[0] == pytest.approx(2.0 / 9)
    assert m[0].tolist() == [1, -1, 1, 1, 1, 1, 1, 1, -1]


def test_more_bits_give_smaller_error():
    w = np.random.default_rng(0).normal(size=(16, 8, 3, 3)) * 0.05
    errors = []
    for bits in range(1, 6):
        alpha, codes, shift = quantize_kernels(w, bits)
        assert alpha.dtype == np.uint8 and codes.dtype == np.uint8
        assert codes.max() < (1 << bits) and 0 <= shift <= C.WEIGHT_SHIFT_MAX
        top = (1 << bits) - 1
        wq = alpha[:, :, None, None] * (2.0 * codes - top) / 2.0**shift
        errors.append(np.linalg.norm(wq - w) / np.linalg.norm(w))
    assert errors == sorted(errors, reverse=True)
    assert errors[2] < 0.2  # 3 bits


def test_layer_shift_uses_the_alpha_range():
    w = np.random.default_rng(1).normal(size=(4, 4, 3, 3)) * 0.01
    alpha, _, shift = quantize_kernels(w, 2)
    assert alpha.max() > 127  # the largest alpha fills the upper half of 8 bits


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, 6, elements=st.floats(-1e4, 1e4)), st.integers(0, 20))
def test_bias_fits_12_bits_within_half_a_step(bias, acc_frac):
    q, shift = quantize_bias(bias, acc_frac)
    assert q.min() >= C.BIAS_MIN and q.max() <= C.BIAS_MAX
    step = 2.0 ** (shift - acc_frac)
    # rounded at the accumulator scale, then at the shifted scale: at most one step plus half
    assert np.all(np.abs(q * step - bias) <= step + 2.0**-acc_frac)


def test_input_fold_matches_the_normalised_float_conv_inside_the_border():
    rng = np.random.default_rng(2)
    conv = FloatConv("conv1_1", rng.normal(size=(4, 3, 3, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    mean_int = input_mean_int(mean)
    folded = fold_input_normalisation(conv, mean, std, mean_int)
    pixels = rng.integers(0, 256, (1, 3, 10, 10)).astype(np.float64)
    norm = (pixels / 255 - np.array(mean)[None, :, None, None]) / np.array(std)[None, :, None, None]
    want = F.conv2d(torch.from_numpy(norm), torch.from_numpy(conv.weight.astype(np.float64)), torch.from_numpy(conv.bias.astype(np.float64)), padding=1)
    x0 = pixels - np.array(mean_int)[None, :, None, None]
    got = F.conv2d(torch.from_numpy(x0), torch.from_numpy(folded.weight), torch.from_numpy(folded.bias), padding=1)
    np.testing.assert_allclose(got[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], rtol=1e-9, atol=1e-9)


def _tiny_stack(seed=0):
    return random_stack([8, "M", 16, "M"], seed=seed)


def test_quantized_stack_runs_close_to_the_float_model():
    stack = _tiny_stack()
    model, reports = quantize_stack(stack, [5, 5], [4, 4], (16, 16))
    assert [layer.name for layer in model.layers] == ["conv1_1", "pool1", "conv2_1"]  # trailing pool dropped
    assert [r.mask_bits for r in reports] == [5, 5]
    pixels = np.random.default_rng(3).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    chip = golden.run(model, pixels).astype(np.float64) * 2.0 ** -model.activation_fracs()[-1]
    from chipq.floatnet.reference import FloatReference

    ref = FloatReference(stack.without_trailing_pool()).run(pixels[None])[0]
    cosine = (chip * ref).sum() / np.linalg.norm(chip) / np.linalg.norm(ref)
    assert cosine > 0.97


def test_dequantized_weights_are_alpha_m_shifted():
    model, _ = quantize_stack(_tiny_stack(), [2, 2], [4, 4], (16, 16))
    layer = model.conv_layers()[1]
    expected = layer.alpha[:, :, None, None] * (2.0 * layer.mask - 3) / 2.0**layer.weight_shift
    np.testing.assert_array_equal(dequantized_weights(layer), expected)


def test_plan_length_mismatch_is_refused():
    with pytest.raises(QuantizationError, match="plan has 1"):
        quantize_stack(_tiny_stack(), [3], [4, 4])


def test_a_bias_too_large_for_12_bits_names_its_layer():
    from chipq.floatnet.model import FloatConv
    from chipq.quant.quantize import quantize_conv

    weight = np.full((2, 3, 3, 3), 0.1, dtype=np.float32)
    conv = FloatConv("conv3_1", weight, np.array([1e12, 0.0], dtype=np.float32))
    with pytest.raises(QuantizationError, match="layer conv3_1: bias too large for 12 bits"):
        quantize_conv(conv, 1, 8, 0)
