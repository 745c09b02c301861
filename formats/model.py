"""The quantized model as the chip format (v1, v2) holds it, in memory.

The reader returns a `ChipModel`, the writer takes one, the executors run one. Arrays hold integers
exactly as the spec defines them; nothing here is float.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from chipq.formats import constants as C
from chipq.formats.packing import conv_region_sizes


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
        alpha_bits: width a of a stored alpha code, 1..8 (SPEC 3.4). `alpha` always holds the
            8-bit value the chip multiplies by, ``code << (8 - a)``: every element is a multiple
            of ``2**(8 - a)``. 8 is v1's width.
        present: None (every kernel stored, as in v1), or a bool array (out, in) marking the kernels
            the blob stores (SPEC 3.5). An absent kernel weighs zero: its alpha and mask are 0.
    """

    name: str
    mask_bits: int
    weight_shift: int
    bias_shift: int
    out_shift: int
    alpha: np.ndarray
    mask: np.ndarray
    bias: np.ndarray
    alpha_bits: int = C.ALPHA_BITS
    present: np.ndarray | None = None
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
    def pruned(self) -> bool:
        """Whether the blob stores this layer with a kernel presence bitmap (SPEC 3.5)."""
        return self.present is not None

    @property
    def uses_v2(self) -> bool:
        """Whether this layer needs chip format v2: a narrow alpha or a presence bitmap."""
        return self.pruned or self.alpha_bits != C.ALPHA_BITS

    def kept_kernels(self) -> int:
        """Kernels the blob stores: all O*I, or the present ones."""
        if self.present is None:
            return self.out_channels * self.in_channels
        return int(np.count_nonzero(self.present))

    def region_sizes(self) -> tuple[int, int, int, int]:
        """Bytes of its payload's presence, alpha, bias and mask regions (SPEC 3.1)."""
        kept = self.kept_kernels() if self.pruned else None
        return conv_region_sizes(self.out_channels, self.in_channels, self.mask_bits, self.alpha_bits, kept)

    def alpha_codes(self) -> np.ndarray:
        """The stored alpha codes (uint8, shape (out, in)): ``alpha >> (8 - alpha_bits)``."""
        return (self.alpha >> (C.ALPHA_BITS - self.alpha_bits)).astype(np.uint8)

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
            (self.name, self.mask_bits, self.weight_shift, self.bias_shift, self.out_shift, self.alpha_bits)
            == (other.name, other.mask_bits, other.weight_shift, other.bias_shift, other.out_shift, other.alpha_bits)
            and (self.present is None) == (other.present is None)
            and (self.present is None or _same(self.present, other.present))
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

    def format_version(self) -> int:
        """The version its blob carries: 1 unless a layer uses a v2 feature (SPEC 2)."""
        return C.FORMAT_V2 if any(layer.uses_v2 for layer in self.conv_layers()) else C.FORMAT_V1

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
