"""Sub-byte packing of the chip format (SPEC 3.2) and the region sizes of a conv payload (SPEC 3.1).

A sequence of w-bit fields is one bit stream: element k occupies bits k*w .. k*w + w - 1, least
significant bit first, and stream bit j is bit (j mod 8) of byte j // 8. The last byte is padded
with zero bits. Signed 12-bit fields (biases) store the low 12 bits of the two's complement value.

The functions work on whole arrays with numpy bit operations: VGG-16 has ~15M mask codes, so a
Python loop per element is not an option.

>>> pack_uint(np.array([5, 2, 7]), 3).hex(" ")
'd5 01'
>>> unpack_uint(bytes.fromhex("d501"), 3, 3).tolist()
[5, 2, 7]
>>> pack_int12(np.array([-2, 1000])).hex(" ")
'fe 8f 3e'
>>> unpack_int12(bytes.fromhex("fe8f3e"), 2).tolist()
[-2, 1000]
"""

from __future__ import annotations

import numpy as np

from chipq.formats import constants as C

MAX_FIELD_BITS = 16  # widest field the packer handles; the format uses 1..5 (masks), 1..8 (alpha), 12 (biases)


def packed_size(count: int, width: int) -> int:
    """Bytes that `count` fields of `width` bits occupy, padding included: ceil(count*width / 8).

    Python ints, so a hostile count cannot overflow.

    >>> packed_size(3, 3), packed_size(8, 1), packed_size(0, 5)
    (2, 1, 0)
    """
    return (count * width + 7) // 8


def conv_region_sizes(
    out_channels: int,
    in_channels: int,
    mask_bits: int,
    alpha_bits: int = C.ALPHA_BITS,
    kept: int | None = None,
) -> tuple[int, int, int, int]:
    """Bytes of the presence, alpha, bias and mask regions of a conv payload (SPEC 3.1), in that order.

    Args:
        out_channels, in_channels, mask_bits, alpha_bits: the layer record's fields.
        kept: the number of present kernels of a layer with a presence bitmap (SPEC 3.5); None for a
            layer without one (every kernel stored, presence region empty).

    Python ints throughout, so a hostile field cannot overflow. The payload is the four regions back
    to back; v1 is ``alpha_bits = 8, kept = None``.

    >>> conv_region_sizes(2, 3, 2)
    (0, 6, 3, 14)
    >>> conv_region_sizes(2, 3, 2, alpha_bits=4, kept=5)
    (1, 3, 3, 12)
    """
    kernels = out_channels * in_channels
    stored = kernels if kept is None else kept
    return (
        0 if kept is None else packed_size(kernels, 1),
        packed_size(stored, alpha_bits),
        packed_size(out_channels, C.BIAS_BITS),
        packed_size(stored * C.KERNEL_TAPS, mask_bits),
    )


def conv_payload_size(
    out_channels: int,
    in_channels: int,
    mask_bits: int,
    alpha_bits: int = C.ALPHA_BITS,
    kept: int | None = None,
) -> int:
    """Bytes of a conv payload (SPEC 3.1): the sum of `conv_region_sizes`.

    >>> conv_payload_size(512, 512, 1), conv_payload_size(512, 512, 1, alpha_bits=4, kept=131072)
    (557824, 246528)
    """
    return sum(conv_region_sizes(out_channels, in_channels, mask_bits, alpha_bits, kept))


def pack_uint(values: np.ndarray, width: int) -> bytes:
    """Pack unsigned integers as `width`-bit fields, LSB first (SPEC 3.2).

    Args:
        values: integers in [0, 2**width), any shape; packed in C (row-major) order.
        width: bits per field, 1..16.

    Returns:
        ``packed_size(values.size, width)`` bytes; padding bits are zero.

    Raises:
        ValueError: width outside 1..16 or a value that does not fit (a caller bug: the writer
            checks ranges first and reports them as format errors).
    """
    _check_width(width)
    flat = np.asarray(values).reshape(-1)
    if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= (1 << width)):
        raise ValueError(f"values must lie in 0..{(1 << width) - 1} to pack in {width} bits")
    # Each value as two little-endian bytes, then as 16 bits LSB first; keep the low `width` bits of
    # every row and let packbits lay the rows end to end as one stream.
    as_bytes = flat.astype("<u2").view(np.uint8).reshape(-1, 2)
    bits = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :width]
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def unpack_uint(data: bytes | memoryview, width: int, count: int) -> np.ndarray:
    """Unpack `count` unsigned `width`-bit fields (SPEC 3.2).

    Args:
        data: exactly ``packed_size(count, width)`` bytes.
        width: bits per field, 1..16.
        count: number of fields.

    Returns:
        A 1-D array of `count` values: uint8 for width <= 8, else uint16.

    Raises:
        ValueError: `data` has the wrong length (the reader checks sizes before it unpacks).
    """
    _check_width(width)
    if len(data) != packed_size(count, width):
        raise ValueError(f"{len(data)} bytes given, {packed_size(count, width)} expected")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count * width, bitorder="little")
    # Re-pack each row of `width` bits into whole little-endian bytes (high bits zero-filled).
    out_bytes = 1 if width <= 8 else 2
    rows = np.zeros((count, 8 * out_bytes), dtype=np.uint8)
    rows[:, :width] = bits.reshape(count, width)
    packed = np.packbits(rows, axis=1, bitorder="little")
    if out_bytes == 1:
        return packed.reshape(-1)
    return packed.view("<u2").reshape(-1).astype(np.uint16)


def padding_bits_zero(data: bytes | memoryview, width: int, count: int) -> bool:
    """Whether the padding bits after `count` fields of `width` bits in `data` are all zero.

    >>> padding_bits_zero(bytes.fromhex("d501"), 3, 3), padding_bits_zero(bytes.fromhex("d503"), 3, 3)
    (True, False)
    """
    used = count * width
    if used % 8 == 0 or not len(data):
        return True
    return (data[-1] >> (used % 8)) == 0


def pack_int12(values: np.ndarray) -> bytes:
    """Pack signed integers in [-2048, 2047] as 12-bit two's complement fields (SPEC 3.2)."""
    flat = np.asarray(values).reshape(-1).astype(np.int64)
    if flat.size and (int(flat.min()) < C.BIAS_MIN or int(flat.max()) > C.BIAS_MAX):
        raise ValueError(f"values must lie in {C.BIAS_MIN}..{C.BIAS_MAX} to pack in 12 bits")
    return pack_uint(flat & ((1 << C.BIAS_BITS) - 1), C.BIAS_BITS)


def unpack_int12(data: bytes | memoryview, count: int) -> np.ndarray:
    """Unpack `count` signed 12-bit fields; returns int16 values in [-2048, 2047]."""
    raw = unpack_uint(data, C.BIAS_BITS, count).astype(np.int16)
    return np.where(raw > C.BIAS_MAX, raw - (1 << C.BIAS_BITS), raw).astype(np.int16)


def _check_width(width: int) -> None:
    if not 1 <= width <= MAX_FIELD_BITS:
        raise ValueError(f"field width {width} not in 1..{MAX_FIELD_BITS}")
