"""The quantized model as chip format v1 holds it, in memory.

The reader returns a `ChipModel`, the writer takes one, the executors run one. Arrays hold integers
exactly as the spec defines them; nothing here is float.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from chipq.formats import constants as C


@dataclass(frozen=True, eq=False)
class ConvLayer:
    """A 3x3 conv (stride 1, zero pad 1) + bias + requantisation + ReLU, in integers.

    Attributes:
        name: layer name, e.g. ``conv4_2``.
        mask_bits: width m of every mask element, 1..5.
        weight_shift: the layer's weight exponent s: a weight is ``alpha * M * 2**-s``.
        bias_shift: left shift that aligns a 12-bit bias with the accumulator.
        out_shift: right shift (rounding half up) from the accumulator to the 8-bit output.
        alpha: uint8 array (out, in), one scale per 3x3 kernel.
        mask: uint8 array (out, in, 3, 3) of mask *codes* in [0, 2**m); the signed value of code c
            is ``2c - (2**m - 1)`` (see `constants.mask_levels`).
        bias: int16 array (out,), values in [-2048, 2047].
    """

    name: str
    mask_bits: int
    weight_shift: int
    bias_shift: int
    out_shift: int
    alpha: np.ndarray
    mask: np.ndarray
    bias: np.ndarray
    kind: C.LayerKind = field(default=C.LayerKind.CONV3X3_RELU, init=False)

    def out_frac(self, in_frac: int) -> int:
        """Fraction bits of this layer's output when its input has `in_frac` (SPEC §4).

        The accumulator holds ``in_frac + weight_shift`` fraction bits and the requantisation
        removes ``out_shift`` of them: the one home of this rule.
        """
        return in_frac + self.weight_shift - self.out_shift

    @property
    def in_channels(self) -> int:
        return int(self.alpha.shape[1])

    @property
    def out_channels(self) -> int:
        return int(self.alpha.shape[0])

    def signed_mask(self) -> np.ndarray:
        """The mask as signed values M (int16), shape (out, in, 3, 3)."""
        top = (1 << self.mask_bits) - 1
        return self.mask.astype(np.int16) * 2 - top

    def int_weights(self) -> np.ndarray:
        """W = alpha * M as int32, shape (out, in, 3, 3): the weight in units of 2**-weight_shift."""
        return self.alpha.astype(np.int32)[:, :, None, None] * self.signed_mask().astype(np.int32)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConvLayer):
            return NotImplemented
        return (
            (self.name, self.mask_bits, self.weight_shift, self.bias_shift, self.out_shift)
            == (other.name, other.mask_bits, other.weight_shift, other.bias_shift, other.out_shift)
            and _same(self.alpha, other.alpha)
            and _same(self.mask, other.mask)
            and _same(self.bias, other.bias)
        )


@dataclass(frozen=True)
class PoolLayer:
    """A 2x2 max-pool, stride 2; an odd last row or column is dropped (floor)."""

    name: str
    channels: int
    kind: C.LayerKind = field(default=C.LayerKind.MAXPOOL2X2, init=False)

    @property
    def in_channels(self) -> int:
        return self.channels

    @property
    def out_channels(self) -> int:
        return self.channels


Layer = ConvLayer | PoolLayer


@dataclass(frozen=True)
class ChipModel:
    """A whole chip model: the input contract and the layer chain.

    Attributes:
        input_height, input_width: the chip's input buffer (224x224 for the paper's chip).
        channel_order: order of the colour planes the chip expects.
        input_mean: per-channel integer the chip subtracts from each uint8 pixel before conv1
            (in `channel_order`); 1/std is folded into conv1's alpha.
        layers: the chain, run in order; the last layer's output is the feature map.
    """

    input_height: int
    input_width: int
    channel_order: C.ChannelOrder
    input_mean: tuple[int, int, int]
    layers: tuple[Layer, ...]

    def conv_layers(self) -> list[ConvLayer]:
        return [layer for layer in self.layers if isinstance(layer, ConvLayer)]

    def activation_fracs(self) -> list[int]:
        """Fraction bits f of each layer's output: its real value is ``a * 2**-f``.

        The input of conv1 has f = 0 (integer pixel units); a conv's output has
        ``f_in + weight_shift - out_shift``; a pool keeps f.
        """
        fracs, frac = [], 0
        for layer in self.layers:
            if isinstance(layer, ConvLayer):
                frac = layer.out_frac(frac)
            fracs.append(frac)
        return fracs


def layer_stem(index: int, name: str) -> str:
    """The file stem that names layer `index` (its place in `ChipModel.layers`) of a chip model.

    Test vectors, memory images, the C model's outputs and the export manifest all name a layer's
    files ``<l:02d>_<name>`` (SPEC 7), so that they sort in run order and match one another.

    >>> layer_stem(3, "conv2_1")
    '03_conv2_1'
    """
    return f"{index:02d}_{name}"


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))
