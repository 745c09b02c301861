"""cocotb testbenches of the datapath primitives, each output compared with the golden executor.

Run by tests/rtl/test_primitives.py (one simulator build per primitive); the expected values come
from `chipq.executor.golden` and `chipq.formats.constants`, never from a copy of the RTL's formulas.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.triggers import Timer

from chipq.executor import golden
from chipq.formats import constants as C
from chipq.formats.model import ConvLayer

SETTLE = (1, "ns")


async def settle() -> None:
    await Timer(*SETTLE)


def signed(value, bits: int) -> int:
    return value.to_signed() if hasattr(value, "to_signed") else int(value.signed_integer)


@cocotb.test()
async def mask_decoder_every_code_and_alpha(dut):
    """Every m in 1..5, every 5-bit code (bits at and above m ignored), every alpha 0..255."""
    checked = 0
    for m in range(C.MIN_MASK_BITS, C.MAX_MASK_BITS + 1):
        levels = C.mask_levels(m)
        dut.m.value = m
        for code in range(32):
            dut.code.value = code
            for alpha in range(256):
                dut.alpha.value = alpha
                await settle()
                level = levels[code & ((1 << m) - 1)]
                assert signed(dut.level.value, 6) == level, (m, code, alpha)
                assert signed(dut.weight.value, 14) == alpha * level, (m, code, alpha)
                checked += 1
    dut._log.info("mask decoder: %d cases equal", checked)


def _layer(alpha: int, codes: np.ndarray, m: int, bias: int, bias_shift: int) -> ConvLayer:
    return ConvLayer(
        name="tap",
        mask_bits=m,
        weight_shift=0,
        bias_shift=bias_shift,
        out_shift=0,
        alpha=np.array([[alpha]], dtype=np.uint8),
        mask=codes.reshape(1, 1, 3, 3).astype(np.uint8),
        bias=np.array([bias], dtype=np.int16),
    )


@cocotb.test()
async def mac3x3_matches_golden_conv_at_the_centre(dut):
    """acc = bias << bias_shift + sum W*x: golden conv3x3_accumulate of a 3x3 map at its centre.

    Weights decoded on the host from random (alpha, codes, m); activations signed 9-bit (conv1) or
    uint8; bias shifts up to the largest the 32-bit bound leaves; `first` = 0 adds to acc_in.
    """
    rng = random.Random(13)
    for case in range(3000):
        m = rng.randint(1, 5)
        alpha = rng.choice([0, 1, 255, rng.randint(0, 255)])
        codes = np.array([rng.randrange(1 << m) for _ in range(9)])
        lo = -255 if rng.random() < 0.5 else 0
        x = np.array([rng.choice([lo, 255, rng.randint(lo, 255)]) for _ in range(9)])
        bias = rng.choice([C.BIAS_MIN, C.BIAS_MAX, rng.randint(C.BIAS_MIN, C.BIAS_MAX)])
        bias_shift = rng.randint(0, 19)  # 2^11 * 2^19 + 9 * 255 * 7905 < 2^31
        layer = _layer(alpha, codes, m, bias, bias_shift)
        acc = int(golden.conv3x3_accumulate(x.reshape(1, 3, 3), layer)[0, 1, 1])
        first = rng.random() < 0.5
        acc_in = 0 if first else rng.randint(-(2**30), 2**30)
        expected = acc if first else acc_in + acc - (bias << bias_shift)
        weights = layer.int_weights().reshape(-1)
        dut.weights.value = sum((int(w) & 0x3FFF) << (14 * t) for t, w in enumerate(weights))
        dut.x.value = sum((int(v) & 0x1FF) << (9 * t) for t, v in enumerate(x))
        dut.first.value = int(first)
        dut.bias.value = bias & 0xFFF
        dut.bias_shift.value = bias_shift
        dut.acc_in.value = acc_in
        await settle()
        assert signed(dut.acc_out.value, 32) == expected, (case, m, alpha, codes.tolist(), x.tolist(), bias, bias_shift)
    dut._log.info("mac3x3: 3000 cases equal")


@cocotb.test()
async def requantiser_rounds_half_up_relu_and_saturates(dut):
    """golden.requantize on the edges (±2^31 ends, exact halves, 0/255 limits) and random accumulators."""
    rng = random.Random(7)
    cases = []
    for shift in range(C.OUT_SHIFT_MAX + 1):
        half = (1 << (shift - 1)) if shift else 0
        for acc in (-(2**31), -1, 0, 1, 2**31 - 1, half, half - 1, 255 << shift, (255 << shift) + half,
                    (255 << shift) + half - 1, -half, -half - 1, (1 << shift) * 3 + half):
            if -(2**31) <= acc < 2**31:
                cases.append((acc, shift))
        cases += [(rng.randint(-(2**31), 2**31 - 1), shift) for _ in range(40)]
        near = min(1 << (shift + 9), 2**31 - 1)  # around the uint8 output range
        cases += [(rng.randint(-near, near), shift) for _ in range(40)]
    for acc, shift in cases:
        dut.acc.value = acc
        dut.out_shift.value = shift
        await settle()
        expected = int(golden.requantize(np.array([acc], dtype=np.int64), shift)[0])
        assert int(dut.y.value) == expected, (acc, shift)
    dut._log.info("requantiser: %d cases equal", len(cases))


@cocotb.test()
async def maxpool_matches_golden(dut):
    """golden.maxpool2x2 of a 2x2 map: random values, ties, all 0 and all 255."""
    rng = random.Random(5)
    quads = [(0, 0, 0, 0), (255, 255, 255, 255), (1, 0, 0, 0), (0, 0, 0, 1)]
    quads += [tuple(rng.randint(0, 255) for _ in range(4)) for _ in range(2000)]
    quads += [tuple(rng.choice([7, 8]) for _ in range(4)) for _ in range(50)]
    for a, b, c, d in quads:
        dut.a.value, dut.b.value, dut.c.value, dut.d.value = a, b, c, d
        await settle()
        expected = int(golden.maxpool2x2(np.array([[[a, b], [c, d]]], dtype=np.uint8))[0, 0, 0])
        assert int(dut.y.value) == expected, (a, b, c, d)
    dut._log.info("max-pool: %d cases equal", len(quads))
