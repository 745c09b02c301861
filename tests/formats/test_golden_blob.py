"""Golden bytes: a tiny blob written out by hand, byte for byte, against the writer and reader."""

from __future__ import annotations

import numpy as np

from chipq.formats import constants as C
from chipq.formats.model import ChipModel, ConvLayer, PoolLayer
from chipq.formats.reader import from_bytes
from chipq.formats.writer import to_bytes

# One conv 3->2 with 2-bit masks, then one max-pool; input 4x6 RGB.
GOLDEN = bytes.fromhex(
    # --- header, offset 0 (64 bytes) ---
    "89 43 48 49 50 51 0d 0a"  # magic "\x89CHIPQ\r\n"
    "01 00"  # version 1
    "40 00"  # header_size 64
    "30 00"  # layer_record_size 48
    "08 00"  # alignment 8
    "02 00 00 00"  # layer_count 2
    "00 00 00 00"  # flags 0
    "b7 00 00 00 00 00 00 00"  # file_size 183
    "04 00"  # input_height 4
    "06 00"  # input_width 6
    "03"  # input_channels 3
    "00"  # channel_order RGB
    "7c 74 68"  # input_mean 124, 116, 104
    "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"  # reserved (15)
    "0d b6 d8 c7"  # table_crc32 = crc32(bytes 64..159) = 0xc7d8b60d
    "10 77 f1 a6"  # header_crc32 = crc32(bytes 0..59) = 0xa6f17710
    # --- layer table, offset 64: record 0, conv ---
    "01 00 00 00"  # kind 1 (conv3x3_relu), reserved
    "63 6f 6e 76 31 5f 31 00 00 00 00 00 00 00 00 00"  # name "conv1_1", NUL-padded to 16
    "03 00 02 00"  # in_channels 3, out_channels 2
    "02 05 01 03"  # mask_bits 2, weight_shift 5, bias_shift 1, out_shift 3
    "00 00 00 00"  # reserved
    "a0 00 00 00 00 00 00 00"  # payload_offset 160
    "17 00 00 00"  # payload_size 23 = 6 alpha + 3 bias + 14 mask
    "55 b3 aa 39"  # payload_crc32 = 0x39aab355
    # --- record 1 at offset 112, max-pool: no payload ---
    "02 00 00 00"  # kind 2 (maxpool2x2), reserved
    "70 6f 6f 6c 31 00 00 00 00 00 00 00 00 00 00 00"  # name "pool1"
    "02 00 02 00"  # in_channels 2, out_channels 2
    "00 00 00 00 00 00 00 00"  # mask_bits, shifts 0; reserved
    "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"  # payload_offset, size, crc 0
    # --- conv1_1 payload, offset 160 (table ends at 160, already aligned) ---
    "01 02 03 04 05 06"  # alpha[o][i], o-major: [[1, 2, 3], [4, 5, 6]]
    "fe 8f 3e"  # bias [-2, 1000] as 12-bit: 0xffe | 0x3e8 << 12 = 0x3e8ffe, little-endian
    # mask codes c_k = k mod 4 for k = 0..53, 2 bits each, LSB first: 0,1,2,3 -> 0b11_10_01_00 = e4;
    # the last byte holds codes 52, 53 (0, 1) -> 0x04, its high 4 bits are zero padding.
    "e4 e4 e4 e4 e4 e4 e4 e4 e4 e4 e4 e4 e4 04"
)


def golden_model() -> ChipModel:
    conv = ConvLayer(
        name="conv1_1",
        mask_bits=2,
        weight_shift=5,
        bias_shift=1,
        out_shift=3,
        alpha=np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8),
        mask=(np.arange(54) % 4).astype(np.uint8).reshape(2, 3, 3, 3),
        bias=np.array([-2, 1000], dtype=np.int16),
    )
    return ChipModel(
        input_height=4,
        input_width=6,
        channel_order=C.ChannelOrder.RGB,
        input_mean=(124, 116, 104),
        layers=(conv, PoolLayer(name="pool1", channels=2)),
    )


def test_golden_length_is_the_layout_above():
    assert len(GOLDEN) == 64 + 2 * 48 + 23 == 183


def test_writer_produces_the_golden_bytes():
    assert to_bytes(golden_model()) == GOLDEN


def test_reader_decodes_the_golden_bytes():
    model = from_bytes(GOLDEN)
    assert model == golden_model()
    conv = model.layers[0]
    assert conv.mask[0, 0, 0].tolist() == [0, 1, 2]
    assert conv.mask[1, 2, 2].tolist() == [3, 0, 1]  # elements k = 51, 52, 53
    assert conv.signed_mask()[0, 0, 0].tolist() == [-3, -1, 1]  # M = 2c - 3 for m = 2 (SPEC 3.3)
    assert conv.bias.tolist() == [-2, 1000]
