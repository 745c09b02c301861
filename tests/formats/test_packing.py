"""Sub-byte packing (SPEC 3.2) against a naive big-integer reference."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chipq.formats import packing


def reference_pack(values: list[int], width: int) -> bytes:
    """SPEC 3.2 read literally: element k sits at bits k*w .. k*w+w-1 of one little-endian integer."""
    stream = 0
    for k, value in enumerate(values):
        stream |= value << (k * width)
    return stream.to_bytes((len(values) * width + 7) // 8, "little")


def test_doctests_pin_the_spec_example():
    """The module doctests include SPEC 3.2's example: codes 5, 2, 7 at w = 3 give D5 01."""
    result = doctest.testmod(packing)
    assert result.attempted >= 5 and result.failed == 0


def test_spec_example_bytes():
    assert packing.pack_uint(np.array([5, 2, 7]), 3) == bytes([0xD5, 0x01])


def width_and_values(width: int):
    return st.tuples(st.just(width), st.lists(st.integers(0, (1 << width) - 1), max_size=80))


@given(st.integers(1, 16).flatmap(width_and_values))
def test_pack_matches_reference_and_round_trips(case):
    """For any width 1..16 and values that fit: pack equals the literal spec, and unpack inverts it."""
    width, values = case
    packed = packing.pack_uint(np.array(values, dtype=np.int64), width)
    assert packed == reference_pack(values, width)
    assert packing.unpack_uint(packed, width, len(values)).tolist() == values
    assert packing.padding_bits_zero(packed, width, len(values))


@given(st.lists(st.integers(-2048, 2047), max_size=40))
def test_int12_round_trip_and_twos_complement(values):
    """Signed 12-bit fields hold the low 12 bits of the two's complement value (SPEC 3.2)."""
    packed = packing.pack_int12(np.array(values, dtype=np.int16))
    assert packed == reference_pack([v & 0xFFF for v in values], 12)
    unpacked = packing.unpack_int12(packed, len(values))
    assert unpacked.dtype == np.int16 and unpacked.tolist() == values


def test_int12_edges():
    assert packing.pack_int12(np.array([-2048, 2047])) == bytes([0x00, 0xF8, 0x7F])
    assert packing.unpack_int12(bytes([0xFF, 0xFF, 0xFF]), 2).tolist() == [-1, -1]


def test_padding_bits_detected_in_every_position():
    # 3 codes of 3 bits use bits 0..8; bits 9..15 of byte 1 are padding.
    for bit in range(1, 8):
        assert not packing.padding_bits_zero(bytes([0xD5, 0x01 | (1 << bit)]), 3, 3)


@pytest.mark.parametrize(
    "values, width",
    [([8], 3), ([-1], 3), ([1 << 16], 16), ([1], 0), ([1], 17)],
)
def test_pack_refuses_values_or_widths_that_do_not_fit(values, width):
    with pytest.raises(ValueError):
        packing.pack_uint(np.array(values), width)


def test_int12_refuses_out_of_range():
    with pytest.raises(ValueError):
        packing.pack_int12(np.array([2048]))


def test_unpack_refuses_wrong_length():
    with pytest.raises(ValueError, match="2 expected"):
        packing.unpack_uint(b"\x00\x00\x00", 3, 3)


def test_region_sizes_round_up_each_region():
    # 2 out, 3 in, 2-bit masks: alpha 6 bytes, bias 24 bits = 3 bytes, masks 108 bits -> 14 bytes.
    assert packing.conv_region_sizes(2, 3, 2) == (0, 6, 3, 14)
    # 1 out, 1 in, 1 bit: bias 12 bits -> 2 bytes, masks 9 bits -> 2 bytes.
    assert packing.conv_region_sizes(1, 1, 1) == (0, 1, 2, 2)


def test_vgg_sized_round_trip():
    """VGG-16's 14.7M mask codes at 3 bits pack to the computed size and unpack to themselves."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 8, size=14_710_464, dtype=np.uint8)
    packed = packing.pack_uint(codes, 3)
    assert len(packed) == packing.packed_size(codes.size, 3)
    assert np.array_equal(packing.unpack_uint(packed, 3, codes.size), codes)
