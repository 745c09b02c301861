"""Weight-only quantization with chip format v2 settings: narrow alpha and kept kernels (LayerSpec)."""

from __future__ import annotations

import numpy as np
import pytest
from floatcraft import random_stack

from chipq.floatnet.model import FloatConv
from chipq.formats import constants as C
from chipq.formats.reader import from_bytes
from chipq.formats.writer import to_bytes as blob_bytes
from chipq.quant import quantize
from chipq.quant.plan import LayerSpec
from chipq.quant.quantize import (
    alpha_top,
    dequantized_weights,
    fit_kernels,
    quantize_conv,
    quantize_kernels,
    quantize_stack,
    round_alpha,
    strongest_kernels,
    weight_shift_for,
)


def _conv(seed=0, out_ch=8, in_ch=6):
    rng = np.random.default_rng(seed)
    weight = (rng.normal(size=(out_ch, in_ch, 3, 3)) * rng.uniform(0.01, 0.2, size=(out_ch, in_ch, 1, 1))).astype(np.float32)
    return FloatConv("conv2_1", weight, rng.normal(size=out_ch).astype(np.float32) * 0.1)


@pytest.mark.parametrize("alpha_bits", [1, 3, 5, 7, 8])
def test_narrow_alpha_is_on_its_grid_and_fills_its_top_under_the_max_rule(monkeypatch, alpha_bits):
    """Every alpha is a multiple of the a-bit step; the shift is the largest that fits the a-bit top."""
    monkeypatch.setattr(quantize, "SHIFT_RULE", "max")
    weight = _conv().weight
    alpha, _, shift = quantize_kernels(weight, 2, alpha_bits)
    step = C.alpha_step(alpha_bits)
    assert np.all(alpha % step == 0) and alpha.max() <= alpha_top(alpha_bits)
    peak = float(fit_kernels(weight.reshape(-1, 9), 2)[0].max())
    assert shift == weight_shift_for(peak, alpha_bits)
    assert peak * 2**shift <= alpha_top(alpha_bits) < peak * 2 ** (shift + 1)  # the largest such s


@pytest.mark.parametrize("alpha_bits", [1, 3, 5, 7])
def test_the_clip_rule_trades_the_largest_alphas_for_a_finer_grid(monkeypatch, alpha_bits):
    """The opt-in rule for narrow alpha: of the "max" shift and the two above it, the one with
    the least squared alpha error weighted by |M|^2; 8-bit alpha keeps the "max" shift."""
    monkeypatch.setattr(quantize, "SHIFT_RULE", "clip")
    weight = _conv(3, out_ch=32, in_ch=16).weight.astype(np.float64)
    alpha, m = fit_kernels(weight.reshape(-1, 9), 1)
    norms = (m * m).sum(axis=1)
    top = weight_shift_for(float(alpha.max()), alpha_bits)

    def error(shift: int) -> float:
        return float((norms * (alpha - round_alpha(alpha, 2.0**shift, alpha_bits) / 2.0**shift) ** 2).sum())

    chosen = quantize.layer_shift(alpha, m, alpha_bits, "clip")
    assert top <= chosen <= top + 2 and error(chosen) == min(error(s) for s in range(top, top + 3))
    assert quantize_kernels(weight, 1, alpha_bits)[2] == chosen == quantize.layer_shift(alpha, m, alpha_bits)
    assert quantize.layer_shift(alpha, m, 8, "clip") == weight_shift_for(float(alpha.max()))


def test_narrower_alpha_costs_weight_error_and_eight_bits_is_v1():
    weight = _conv(1).weight.astype(np.float64)
    errors = []
    for alpha_bits in (3, 5, 8):
        layer = quantize_conv(FloatConv("c", weight, np.zeros(8)), LayerSpec(2, alpha_bits), 4, 4)
        errors.append(np.linalg.norm(dequantized_weights(layer) - weight))
    assert errors[0] > errors[1] > errors[2]
    v1 = quantize_conv(FloatConv("c", weight, np.zeros(8)), 2, 4, 4)
    assert v1 == quantize_conv(FloatConv("c", weight, np.zeros(8)), LayerSpec(2), 4, 4)
    assert v1.alpha_bits == 8 and v1.present is None


def test_round_alpha_is_half_up_on_the_step():
    assert round_alpha(np.array([11.99, 12.0, 251.0, 252.0, 1000.0]), 1.0, 6).tolist() == [12, 12, 252, 252, 252]
    assert round_alpha(np.array([1.5, 2.5]), 2.0, 8).tolist() == [3, 5]


def test_kept_kernels_are_the_strongest_and_absent_ones_are_zero():
    conv = _conv(2)
    spec = LayerSpec(1, 5, keep=40)
    layer = quantize_conv(conv, spec, 4, 4)
    count = spec.kept(8 * 6)
    assert layer.present is not None and layer.kept_kernels() == count == 19
    energy = np.square(conv.weight.astype(np.float64)).sum(axis=(2, 3))
    assert energy[layer.present].min() >= energy[~layer.present].max()
    assert np.all(layer.alpha[~layer.present] == 0) and np.all(layer.mask[~layer.present] == 0)
    assert np.all(dequantized_weights(layer)[~layer.present] == 0)


def test_the_shift_comes_from_the_kept_kernels_only():
    """A huge pruned kernel must not squeeze the kept kernels' alphas into a coarse grid."""
    conv = _conv(3)
    weight = conv.weight.copy()
    weight[0, 0] *= 1000.0
    present = np.ones((8, 6), dtype=bool)
    present[0, 0] = False
    layer = quantize_conv(FloatConv("c", weight, conv.bias), LayerSpec(2, keep=98), 4, 4, present=present)
    assert layer.weight_shift == quantize_kernels(conv.weight * present[:, :, None, None], 2)[2]


def test_strongest_kernels_ties_keep_the_earlier_kernel():
    weight = np.zeros((2, 3, 3, 3))
    weight[1, 2] = 5.0
    assert strongest_kernels(weight, 2).tolist() == [[True, False, False], [False, False, True]]


def test_a_v2_stack_round_trips_through_the_blob_and_a_v1_plan_stays_v1():
    stack = random_stack([8, "M", 16], seed=4)
    plan = [LayerSpec(3), LayerSpec(1, 4, 50)]
    model, reports = quantize_stack(stack, plan, [4, 4], (16, 16))
    assert model.format_version() == C.FORMAT_V2
    assert [r.alpha_bits for r in reports] == [8, 4] and reports[1].kept == 64
    assert from_bytes(blob_bytes(model)) == model
    v1, _ = quantize_stack(stack, [3, 1], [4, 4], (16, 16))
    as_specs, _ = quantize_stack(stack, [LayerSpec(3), LayerSpec(1)], [4, 4], (16, 16))
    assert v1.format_version() == C.FORMAT_V1 and blob_bytes(v1) == blob_bytes(as_specs)
