"""Every number of the chip format (v1 and v2) that the reader, writer and executors share.

`formats/SPEC.md` is the normative text; this module is its single source in code. No other module
writes a magic, a width, a limit or a layer kind as a bare number.
"""

from __future__ import annotations

from enum import IntEnum

# The first 8 bytes. The high-bit byte and CR LF catch 7-bit and text-mode transfers (as PNG does).
MAGIC = b"\x89CHIPQ\r\n"

# Increased only for structural changes; a reader accepts exactly the versions listed here. A model
# that uses no v2 feature (narrow alpha, kernel presence bitmap) is written as v1, byte for byte.
FORMAT_V1 = 1
FORMAT_V2 = 2
READABLE_VERSIONS = frozenset({FORMAT_V1, FORMAT_V2})

HEADER_SIZE = 64
LAYER_RECORD_SIZE = 48
# Every payload starts at a multiple of ALIGNMENT bytes from the start of the file; the gap before it
# is zero bytes. Stored in the header; a v1 reader accepts only this value.
ALIGNMENT = 8

NAME_SIZE = 16  # bytes of a layer name field, ASCII, NUL-padded; at most NAME_SIZE - 1 characters
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")

# Caps a reader checks before it allocates anything.
MAX_LAYERS = 64
MAX_CHANNELS = 4096
MAX_INPUT_SIDE = 4096
MAX_FILE_SIZE = 1 << 31  # 2 GiB; VGG-16 at 5-bit masks is under 10 MB

KERNEL_SIZE = 3  # every conv is 3x3, stride 1, zero padding 1
KERNEL_TAPS = KERNEL_SIZE * KERNEL_SIZE
POOL_SIZE = 2  # every max-pool is 2x2, stride 2, floor

MIN_MASK_BITS = 1
MAX_MASK_BITS = 5
ALPHA_BITS = 8  # unsigned; the width of the value the chip multiplies by, and v1's stored width
ALPHA_MAX = (1 << ALPHA_BITS) - 1  # the largest kernel scale
MIN_ALPHA_BITS = 1  # v2: a layer may store a-bit codes, the chip multiplies by code << (8 - a)
WEIGHT_SHIFT_MAX = 15  # the per-layer weight exponent is a 4-bit field
BIAS_BITS = 12  # signed two's complement
BIAS_MIN = -(1 << (BIAS_BITS - 1))
BIAS_MAX = (1 << (BIAS_BITS - 1)) - 1
BIAS_SHIFT_MAX = 31
OUT_SHIFT_MAX = 31

ACC_BITS = 32  # signed accumulator
ACC_MAX = (1 << (ACC_BITS - 1)) - 1
ACT_BITS = 8  # unsigned activations between layers
ACT_MAX = (1 << ACT_BITS) - 1
INPUT_CHANNELS = 3
CHIP_INPUT_HW = (224, 224)  # (height, width) of the paper's chip input buffer: the default everywhere

# Every integer of magnitude up to 2^24 is exactly a float32: the fast executors' exactness bound.
FLOAT32_EXACT = 1 << 24


class LayerKind(IntEnum):
    """Layer record kinds."""

    CONV3X3_RELU = 1
    MAXPOOL2X2 = 2


class LayerFlag(IntEnum):
    """Bits of a v2 conv record's `flags` byte (SPEC 3)."""

    KERNEL_PRESENCE = 1  # the payload starts with a presence bitmap; only present kernels are stored


KNOWN_LAYER_FLAGS = int(LayerFlag.KERNEL_PRESENCE)


def alpha_step(alpha_bits: int) -> int:
    """The spacing of the 8-bit alpha values an `alpha_bits`-wide code can stand for (SPEC 3.4).

    >>> alpha_step(8), alpha_step(5)
    (1, 8)
    """
    return 1 << (ALPHA_BITS - alpha_bits)


class ChannelOrder(IntEnum):
    """Order of the colour planes in the chip's input buffer."""

    RGB = 0
    BGR = 1


def mask_levels(bits: int) -> list[int]:
    """The signed mask value of every code of a `bits`-wide mask, code order.

    Code c means M = 2c - (2^bits - 1): the odd integers, symmetric, no zero.

    >>> mask_levels(1)
    [-1, 1]
    >>> mask_levels(3)
    [-7, -5, -3, -1, 1, 3, 5, 7]
    """
    top = (1 << bits) - 1
    return [2 * code - top for code in range(1 << bits)]
