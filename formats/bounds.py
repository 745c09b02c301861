"""The accumulator bound of SPEC 4.5, shared by the writer (which proves it) and the reader (which
refuses a blob that breaks it).

It lives apart from both so that each can import it: the writer already imports the reader.
"""

from __future__ import annotations

import numpy as np

from chipq.formats import constants as C
from chipq.formats import errors as E
from chipq.formats.model import ChipModel, ConvLayer


def accumulator_bound(model: ChipModel) -> list[int]:
    """max_o B[o] of SPEC 4.5 for every conv layer, in layer order (Python ints, exact).

    B[o] = |bias[o]| * 2^bias_shift + X * sum |W[o]| + rounding term, where X is the largest
    |input|: 255 for uint8 activations, and for the first layer the largest |pixel - mean|.
    """
    bounds = []
    for index, layer in enumerate(model.layers):
        if isinstance(layer, ConvLayer):
            bounds.append(conv_bound(layer, largest_input(model, index)))
    return bounds


def largest_input(model: ChipModel, index: int) -> int:
    """X of SPEC 4.5 for the layer at `index`: the largest |input| it can see."""
    if index == 0:  # conv1 sees pixel - mean, signed (SPEC 4.1)
        return max(max(int(m), C.ACT_MAX - int(m)) for m in model.input_mean)
    return C.ACT_MAX


def conv_bound(layer: ConvLayer, largest_in: int) -> int:
    """max_o B[o] of SPEC 4.5 for one conv layer whose inputs satisfy |x| <= `largest_in`."""
    # |W| = alpha * |M|: sum over the 9 taps of |M| per kernel, then weight by alpha. int64 is exact:
    # at most 4096 * 255 * 9 * 31 < 2^29 per output channel.
    abs_mask = np.abs(layer.signed_mask().astype(np.int64)).sum(axis=(2, 3))
    weight_sum = (layer.alpha.astype(np.int64) * abs_mask).sum(axis=1)
    bias_term = [abs(int(b)) << layer.bias_shift for b in layer.bias]
    rounding = (1 << (layer.out_shift - 1)) if layer.out_shift > 0 else 0
    return max(b + largest_in * int(w) for b, w in zip(bias_term, weight_sum)) + rounding


def check_accumulator_bounds(model: ChipModel) -> None:
    """Refuse the first conv layer whose bound exceeds the signed 32-bit accumulator (SPEC 4.5).

    Raises:
        AccumulatorOverflow: naming the layer, its bound and the limit.
    """
    for layer, bound in zip(model.conv_layers(), accumulator_bound(model)):
        if bound > C.ACC_MAX:
            raise E.AccumulatorOverflow(
                f"layer {layer.name}: worst-case accumulator {bound} exceeds {C.ACC_MAX} (SPEC 4.5); "
                "alpha, the bias or bias_shift is too large"
            )
