"""Random but valid `ChipModel`s of any VGG-like shape, for tests and size checks.

`random_model([3, 2], [8, "M", 16], input_hw=(32, 32))` builds conv1_1 (3->8, 3-bit masks), pool1
and conv2_1 (8->16, 2-bit masks) in about a millisecond; `random_model(VGG16_PLAN_3X7_1X6,
VGG16_CONFIG)` builds a VGG-16-sized model (14.7M mask codes) in well under a second. Alpha values
are capped per layer so that the accumulator bound of SPEC 4.5 holds, and `out_shift` is picked so
that typical outputs land inside 0..255 rather than all saturating: the executors see realistic
integer traffic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from chipq.formats import constants as C
from chipq.formats.model import ChipModel, ConvLayer, Layer, PoolLayer

# torchvision's VGG-16 ("D") feature stack without its last max-pool: retrieval pools the conv5_3
# map itself, so a blob ends with conv5_3 (SPEC 6, "Trailing pool").
VGG16_CONFIG: list[int | str] = [
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512
]  # fmt: skip
# The paper's plan 3x7,1x6: 3-bit masks on conv1_1..conv3_3, 1-bit on conv4_1..conv5_3.
VGG16_PLAN_3X7_1X6: list[int] = [3] * 7 + [1] * 6
IMAGENET_MEAN_PIXELS = (124, 116, 104)  # round(255 * torchvision mean), RGB

_ALPHA_TYPICAL_MAX = 64  # real layers use a fraction of the 8-bit range for most kernels
_OUTPUT_TARGET_STD = 64  # aim the output spread at a quarter of the uint8 range


def random_model(
    plan_bits: Sequence[int],
    channels: Sequence[int | str],
    input_hw: tuple[int, int] = C.CHIP_INPUT_HW,
    seed: int = 0,
    input_mean: tuple[int, int, int] = IMAGENET_MEAN_PIXELS,
    channel_order: C.ChannelOrder = C.ChannelOrder.RGB,
    alpha_bits: int | Sequence[int] = C.ALPHA_BITS,
    keep: float | Sequence[float] | None = None,
) -> ChipModel:
    """A valid random model: ``channels`` lists conv widths, ``"M"`` for a 2x2 max-pool.

    Args:
        plan_bits: mask bits of each conv, in order (one entry per int in `channels`).
        channels: the VGG-style configuration; trailing pools are dropped (SPEC 6).
        input_hw: the input buffer (height, width).
        seed: the same seed gives the same model.
        input_mean: the pixel mean the chip subtracts.
        channel_order: plane order of the input buffer.
        alpha_bits: width of the stored alpha codes (chip format v2 below 8), one for all convs or
            one per conv.
        keep: None for no presence bitmap; else the share of kernels kept (0..1), one for all convs
            or one per conv: each layer then has a presence bitmap (v2), kernels dropped at random.

    Raises:
        ValueError: `plan_bits` does not have one entry per conv.
    """
    config = list(channels)
    while config and config[-1] == "M":
        config.pop()
    widths = [c for c in config if c != "M"]
    if len(plan_bits) != len(widths):
        raise ValueError(f"plan has {len(plan_bits)} entries for {len(widths)} convs")
    rng = np.random.default_rng(seed)
    bits_iter = iter(plan_bits)
    alpha_iter = iter([alpha_bits] * len(widths) if isinstance(alpha_bits, int) else list(alpha_bits))
    keep_iter = iter([keep] * len(widths) if keep is None or isinstance(keep, float | int) else list(keep))
    layers: list[Layer] = []
    in_ch, block, index = C.INPUT_CHANNELS, 1, 1
    for entry in config:
        if entry == "M":
            layers.append(PoolLayer(name=f"pool{block}", channels=in_ch))
            block, index = block + 1, 1
            continue
        if not layers:  # the first conv sees pixels minus the mean, not uint8 activations
            largest_input = max(max(m, C.ACT_MAX - m) for m in input_mean)
        else:
            largest_input = C.ACT_MAX
        name = f"conv{block}_{index}"
        conv = _random_conv(rng, name, in_ch, int(entry), next(bits_iter), largest_input)
        layers.append(_v2_features(rng, conv, next(alpha_iter), next(keep_iter)))
        in_ch, index = int(entry), index + 1
    return ChipModel(
        input_height=input_hw[0],
        input_width=input_hw[1],
        channel_order=channel_order,
        input_mean=tuple(input_mean),
        layers=tuple(layers),
    )


def _random_conv(
    rng: np.random.Generator, name: str, in_ch: int, out_ch: int, bits: int, largest_input: int
) -> ConvLayer:
    bias_shift = int(rng.integers(0, 4))
    bias = rng.integers(-512, 512, size=out_ch).astype(np.int16)
    top_level = (1 << bits) - 1  # largest |M|
    # Cap alpha so that B[o] of SPEC 4.5 stays under 2^31 - 1 even if every |M| is the largest level
    # (the rounding term is at most 2^30 for out_shift <= 31, so keep that much headroom).
    budget = C.ACC_MAX - (C.BIAS_MAX + 1) * (1 << bias_shift) - (1 << 30)
    alpha_cap = min(_ALPHA_TYPICAL_MAX, budget // (largest_input * top_level * C.KERNEL_TAPS * in_ch))
    alpha = rng.integers(1, alpha_cap + 1, size=(out_ch, in_ch)).astype(np.uint8)
    mask = rng.integers(0, 1 << bits, size=(out_ch, in_ch, C.KERNEL_SIZE, C.KERNEL_SIZE), dtype=np.uint8)
    # Output spread ~ sqrt(taps * E[alpha^2] * E[M^2] * E[x^2]) for inputs spread over 0..255.
    mean_alpha_sq = alpha_cap * alpha_cap / 3
    mean_mask_sq = ((1 << bits) ** 2 - 1) / 3
    spread = math.sqrt(C.KERNEL_TAPS * in_ch * mean_alpha_sq * mean_mask_sq * C.ACT_MAX**2 / 3)
    out_shift = min(C.OUT_SHIFT_MAX, max(0, round(math.log2(spread / _OUTPUT_TARGET_STD))))
    return ConvLayer(
        name=name,
        mask_bits=bits,
        weight_shift=int(rng.integers(4, 12)),
        bias_shift=bias_shift,
        out_shift=out_shift,
        alpha=alpha,
        mask=mask,
        bias=bias,
    )


def _v2_features(rng: np.random.Generator, conv: ConvLayer, alpha_bits: int, keep: float | None) -> ConvLayer:
    """`conv` with its alpha rounded down to `alpha_bits`-bit codes and, with `keep`, kernels dropped."""
    step = C.alpha_step(alpha_bits)
    alpha = np.maximum(conv.alpha // step, 1).astype(np.uint8) * step  # no kernel vanishes by rounding
    mask, present = conv.mask, None
    if keep is not None:
        present = rng.random(alpha.shape) < keep
        alpha = np.where(present, alpha, 0).astype(np.uint8)
        mask = np.where(present[:, :, None, None], mask, 0).astype(np.uint8)
    return replace(conv, alpha=alpha, mask=mask, alpha_bits=alpha_bits, present=present)
