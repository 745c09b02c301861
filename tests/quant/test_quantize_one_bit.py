"""`quantize_kernels` at 1 bit returns at once what its two integer-domain rounds would make."""

from __future__ import annotations

import numpy as np
import pytest

from chipq.quant.quantize import fit_kernels, nearest_level, quantize_kernels, round_alpha, top_level, weight_shift_for


def with_rounds(w: np.ndarray, bits: int, alpha_bits: int):
    """The general route (two rounds: round α, re-pick M, refit α; then the final α and M)."""
    flat = w.reshape(-1, 9).astype(np.float64)
    alpha, m = fit_kernels(flat, bits)
    shift = weight_shift_for(float(alpha.max(initial=0.0)), alpha_bits)
    scale = float(1 << shift)
    for _ in range(2):
        alpha_int = round_alpha(alpha, scale, alpha_bits)
        real = np.where(alpha_int > 0, alpha_int / scale, 1.0)
        m = nearest_level(flat / real[:, None], bits)
        alpha = np.maximum((flat * m).sum(axis=1) / (m * m).sum(axis=1), 0.0)
    alpha_int = round_alpha(alpha, scale, alpha_bits)
    m = nearest_level(flat / np.where(alpha_int > 0, alpha_int / scale, 1.0)[:, None], bits)
    return alpha_int.astype(np.uint8), ((m + top_level(bits)) / 2).astype(np.uint8).reshape(-1, 9), shift


@pytest.mark.parametrize("alpha_bits", [8, 5, 1])
def test_one_bit_shortcut_equals_the_rounds(alpha_bits):
    rng = np.random.default_rng(alpha_bits)
    w = (rng.normal(size=(64, 40, 3, 3)) * np.exp(rng.normal(size=(64, 40, 1, 1)) * 2)).astype(np.float32)
    w[0, :5] = 0.0  # all-zero kernels, of both signs of zero
    w[1, :5] = -0.0
    w[2, :5, 0, 0] = -0.0
    w[3, :3] = rng.normal(size=(3, 3, 3)) * 1e-30  # tiny ones, where a wrong sign of zero would show
    alpha, codes, shift = quantize_kernels(w, 1, alpha_bits)
    want_alpha, want_codes, want_shift = with_rounds(w, 1, alpha_bits)
    assert shift == want_shift
    assert np.array_equal(alpha.ravel(), want_alpha)
    assert np.array_equal(codes.reshape(-1, 9), want_codes)
