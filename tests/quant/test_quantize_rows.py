"""Kernels are fitted row by row: a subset, a split across threads, or a fit given by the caller
quantize exactly as the whole layer does (`quantize_rows`, `kernel_rows`, `fit_kernels`)."""

from __future__ import annotations

import numpy as np
import pytest

from chipq.floatnet.model import FloatConv
from chipq.quant import quantize as q
from chipq.quant.plan import LayerSpec


def _weights(out_ch: int, in_ch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((out_ch, in_ch, 3, 3)) * rng.uniform(0.01, 0.2, (out_ch, in_ch, 1, 1))).astype(np.float32)


@pytest.mark.parametrize("bits", [1, 2, 3, 5])
def test_threaded_and_subset_fits_equal_the_whole_fit(monkeypatch, bits):
    flat = q.kernel_rows(_weights(96, 64, seed=bits))  # 6144 rows: above the split threshold
    alone_alpha, alone_m = q._fit_rows(flat, bits)
    monkeypatch.setattr(q, "FIT_THREADS", 3)
    alpha, m = q.fit_kernels(flat, bits)
    assert np.array_equal(alpha, alone_alpha) and np.array_equal(m, alone_m)
    rows = np.random.default_rng(1).random(len(flat)) < 0.4
    sub_alpha, sub_m = q.fit_kernels(flat[rows], bits)
    assert np.array_equal(sub_alpha, alpha[rows]) and np.array_equal(sub_m, m[rows])


@pytest.mark.parametrize("spec", [LayerSpec(1, 5, 40), LayerSpec(2, 6, 60), LayerSpec(3, 8, 75)])
def test_a_pruned_layer_quantizes_as_its_masked_whole(spec):
    """The rule before kept kernels were fitted alone: the whole masked layer quantized, then the
    removed kernels' alpha and mask codes set to 0 (SPEC 3.5)."""
    weight = _weights(24, 16)
    conv = FloatConv("c", weight, np.zeros(24, np.float32))
    present = np.random.default_rng(2).random((24, 16)) < spec.keep / 100
    layer = q.quantize_conv(conv, spec, 0, 4, present)
    alpha, codes, shift = q.quantize_kernels(weight * present[:, :, None, None], spec.bits, spec.alpha_bits)
    alpha[~present], codes[~present] = 0, 0
    assert (layer.weight_shift, layer.alpha.tolist(), layer.mask.tolist()) == (shift, alpha.tolist(), codes.tolist())
    given = q.fit_kernels(q.kernel_rows(weight, present), spec.bits)
    again = q.quantize_conv(conv, spec, 0, 4, present, given)
    assert np.array_equal(again.alpha, layer.alpha) and np.array_equal(again.mask, layer.mask)
