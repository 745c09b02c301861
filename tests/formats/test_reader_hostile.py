"""Hostile blobs: every lie is caught by its own error type, before any allocation it could size.

The base is samples/tiny.blob: header (0..63), table of 3 records (64..207), conv1_1 payload
208..324 (3->8, 3-bit), 3 zero bytes of padding, conv2_1 payload 328..767 (8->16, 2-bit); pool1 has
no payload. Unless a test says otherwise, `reseal` recomputes the CRCs and file_size after the lie,
so that the structural check is the one that fires.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from blobcraft import header, name_field, record, reseal, set_header, set_record
from hypothesis import given, settings
from hypothesis import strategies as st

from chipq.formats import constants as C
from chipq.formats import errors as E
from chipq.formats.model import ChipModel, ConvLayer
from chipq.formats.reader import from_bytes, load_blob_bytes, read_blob
from chipq.formats.writer import to_bytes

CONV1, POOL1, CONV2 = 0, 1, 2


@pytest.fixture
def blob(sample_blob_bytes) -> bytes:
    assert header(sample_blob_bytes)["file_size"] == len(sample_blob_bytes) == 768
    assert (record(sample_blob_bytes, CONV2)["payload_offset"], len(sample_blob_bytes)) == (328, 768)
    return sample_blob_bytes


def refuse(data: bytes, error: type[E.FormatError], match: str | None = None) -> str:
    with pytest.raises(error, match=match) as info:
        from_bytes(data)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_the_base_blob_is_valid(blob):
    assert isinstance(from_bytes(blob), ChipModel)
    assert from_bytes(reseal(blob)) == from_bytes(blob)  # reseal alone changes nothing


# --- header ---------------------------------------------------------------------------------------


def test_every_truncation_is_refused(blob):
    """Cut at every byte: shorter than the header, or shorter than the header's file_size."""
    for length in range(len(blob)):
        refuse(blob[:length], E.TruncatedFile)


def test_every_byte_flip_is_refused(blob):
    """Every byte is covered by a CRC or checked to be zero: any flip of one byte is caught."""
    for position in range(len(blob)):
        for pattern in (0x01, 0x80, 0xFF):
            damaged = bytearray(blob)
            damaged[position] ^= pattern
            with pytest.raises(E.FormatError):
                from_bytes(bytes(damaged))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_random_damage_never_escapes_as_another_exception(sample_blob_bytes, data):
    """Any set of byte changes, cut or extension gives a FormatError or a valid model, nothing else."""
    blob = sample_blob_bytes
    damaged = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 6))):
        damaged[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    damaged = damaged[: data.draw(st.integers(0, len(damaged)))] + data.draw(st.binary(max_size=16))
    if data.draw(st.booleans()):
        damaged = reseal(bytes(damaged)) if len(damaged) >= 64 else damaged
    try:
        from_bytes(bytes(damaged))
    except E.FormatError:
        pass


@pytest.mark.parametrize(
    "start",
    [
        b"\x89PNG\r\n\x1a\n",  # a PNG file, not a blob
        b"\x89CHIPQ\n\x01",  # text-mode transfer turned CR LF into LF
        b"\x09CHIPQ\r\n",  # a 7-bit channel cleared the high bit
    ],
)
def test_bad_magic(blob, start):
    refuse(start + blob[8:], E.BadMagic, "not a chipq blob")


@pytest.mark.parametrize("version", [0, 3, 0xFFFF])
def test_unsupported_version(blob, version):
    lie = reseal(set_header(blob, version=version))
    refuse(lie, E.UnsupportedVersion, f"format version {version} not readable")


@pytest.mark.parametrize(
    "field, value",
    [("header_size", 128), ("layer_record_size", 64), ("alignment", 16), ("flags", 1)],
)
def test_structural_header_fields(blob, field, value):
    # The file claims a layout (bigger header, records, other alignment, a flag) v1 does not have.
    refuse(reseal(set_header(blob, **{field: value})), E.BadHeaderField, f"header: {field} {value}")


def test_header_crc(blob):
    # input_height changed but the header CRC not recomputed: the header is damaged.
    refuse(set_header(blob, input_height=64), E.HeaderCrcMismatch)


def test_file_size_lies(blob):
    # The header claims one byte more than there is: a truncated download.
    refuse(reseal(set_header(blob, file_size=769), size=False), E.TruncatedFile, "header says 769 bytes")
    # The header claims 2^63 bytes: refused by comparison, nothing is allocated.
    refuse(reseal(set_header(blob, file_size=1 << 63), size=False), E.TruncatedFile)
    # The header claims fewer bytes than the file has: something was appended.
    refuse(reseal(set_header(blob, file_size=767), size=False), E.FileSizeMismatch, "header says 767")


@pytest.mark.parametrize("count", [0, 65, 0xFFFFFFFF])
def test_layer_count_out_of_range(blob, count):
    # The header claims no layers, or more than the cap (up to 4 billion records).
    refuse(reseal(set_header(blob, layer_count=count)), E.BadLayerCount, f"layer_count {count} not in 1..64")


@pytest.mark.parametrize(
    "fields, error, match",
    [
        ({"input_height": 0}, E.BadHeaderField, "input_height 0"),
        ({"input_width": 5000}, E.BadHeaderField, "input_width 5000"),
        ({"input_channels": 4}, E.BadHeaderField, "input_channels 4"),
        ({"channel_order": 2}, E.BadHeaderField, "channel_order 2"),
        ({"reserved": b"\0" * 14 + b"\1"}, E.NonZeroReserved, "header: reserved"),
    ],
)
def test_input_fields(blob, fields, error, match):
    refuse(reseal(set_header(blob, **fields)), error, match)


def test_table_out_of_bounds(blob):
    # 20 records would end at 64 + 960 = 1024, past the 768-byte file.
    refuse(reseal(set_header(blob, layer_count=20)), E.TableOutOfBounds, "ends at byte 1024, the file at 768")


def test_table_crc(blob):
    # A table byte changed (conv2_1's weight_shift) with the header, and its table CRC, untouched.
    refuse(set_record(blob, CONV2, weight_shift=7), E.TableCrcMismatch)


# --- records --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [0, 3, 255])
def test_unknown_kind(blob, kind):
    refuse(reseal(set_record(blob, POOL1, kind=kind)), E.UnknownLayerKind, f"layer 1: kind {kind}")


def test_reserved_record_bytes(blob):
    refuse(reseal(set_record(blob, CONV1, reserved_a=b"\0\0\1")), E.NonZeroReserved, "layer 0")
    refuse(reseal(set_record(blob, CONV2, reserved_b=b"\1\0\0\0")), E.NonZeroReserved, "layer 2")


@pytest.mark.parametrize(
    "raw",
    [
        b"\0" * 16,  # empty name
        b"a" * 16,  # 16 characters, no NUL terminator
        b"conv1_1\0junk\0\0\0\0",  # bytes hidden after the NUL
        name_field(b"conv 1"),  # a space
        name_field(b"conv\xe91"),  # not ASCII
        name_field(b"\x1b[31mred"),  # a terminal escape sequence
    ],
)
def test_bad_names(blob, raw):
    message = refuse(reseal(set_record(blob, CONV1, name=raw)), E.BadLayerName, "layer 0: name")
    assert "\x1b" not in message  # shown with repr, never raw


def test_duplicate_name(blob):
    refuse(reseal(set_record(blob, CONV2, name=name_field(b"conv1_1"))), E.DuplicateLayerName, "conv1_1")


@pytest.mark.parametrize(
    "index, fields, match",
    [
        (CONV1, {"mask_bits": 0}, "layer conv1_1: mask_bits 0 not in 1..5"),
        (CONV2, {"mask_bits": 6}, "layer conv2_1: mask_bits 6 not in 1..5"),
        (CONV2, {"weight_shift": 16}, "weight_shift 16 not in 0..15"),
        (CONV2, {"bias_shift": 32}, "bias_shift 32 not in 0..31"),
        (CONV2, {"out_shift": 255}, "out_shift 255 not in 0..31"),
        (CONV1, {"out_channels": 0}, "out_channels 0 not in 1..4096"),
        (CONV2, {"out_channels": 65535}, "out_channels 65535 not in 1..4096"),
        (POOL1, {"mask_bits": 1}, "layer pool1: mask_bits 1 not in 0..0"),
        (POOL1, {"payload_size": 8}, "layer pool1: payload_size 8 not in 0..0"),
        (POOL1, {"payload_offset": 768}, "payload_offset 768 not in 0..0"),
        (POOL1, {"out_channels": 9}, "pool out_channels 9 differs from in_channels 8"),
    ],
)
def test_field_ranges(blob, index, fields, match):
    refuse(reseal(set_record(blob, index, **fields)), E.FieldOutOfRange, match)


def test_chain(blob):
    # conv1_1 claims 4 input planes; the input buffer has 3.
    lie = reseal(set_record(blob, CONV1, in_channels=4))
    refuse(lie, E.ChainMismatch, "conv1_1: in_channels 4, but the input")
    # pool1 claims 16 channels (in and out) after an 8-channel conv.
    refuse(reseal(set_record(blob, POOL1, in_channels=16, out_channels=16)), E.ChainMismatch, "pool1")
    # conv2_1 claims 9 inputs after an 8-channel pool.
    refuse(reseal(set_record(blob, CONV2, in_channels=9)), E.ChainMismatch, "conv2_1: in_channels 9")
    # The pool is listed first (records 0 and 1 swapped).
    swapped = blob[:64] + blob[112:160] + blob[64:112] + blob[160:]
    refuse(reseal(swapped), E.ChainMismatch, "first layer must be a conv")


def test_pool_needs_a_2x2_map(blob):
    # The input buffer claims 1 row: pool1 has nothing to pool.
    refuse(reseal(set_header(blob, input_height=1)), E.MapTooSmall, "pool1: max-pool gets a 1x32 map")


def test_misaligned_payload(blob):
    refuse(reseal(set_record(blob, CONV2, payload_offset=329)), E.MisalignedPayload, "payload_offset 329")


def test_overlapping_payloads(blob):
    # conv1_1's payload claims to start inside the layer table (which ends at 208).
    refuse(reseal(set_record(blob, CONV1, payload_offset=200)), E.OverlappingPayload, "ends at 208")
    # conv2_1's payload claims to start inside conv1_1's (208..325).
    refuse(reseal(set_record(blob, CONV2, payload_offset=320)), E.OverlappingPayload, "ends at 325")
    # Both layers claim the same bytes.
    refuse(reseal(set_record(blob, CONV2, payload_offset=208)), E.OverlappingPayload)


@pytest.mark.parametrize("size", [116, 118, 0, 0xFFFFFFFF])
def test_payload_size_lies(blob, size):
    lie = reseal(set_record(blob, CONV1, payload_size=size))
    refuse(lie, E.PayloadSizeMismatch, f"payload_size {size}, its fields give 117")


@pytest.mark.parametrize(
    "index, offset, region_end",
    [
        (CONV2, 336, 325),  # 8 more zero bytes than alignment needs (see the test below)
        (CONV2, 768, 325),  # at the end of the file
        (CONV2, (1 << 64) - 8, 325),  # the largest aligned u64: compared, never used as a size
        (CONV1, 216, 208),  # the first payload one step after the table
    ],
)
def test_payload_later_than_the_first_aligned_offset(blob, index, offset, region_end):
    # SPEC 3: the offset is fixed by what comes before it; a later one is refused even if it fits.
    lie = reseal(set_record(blob, index, payload_offset=offset))
    packed = -(-region_end // 8) * 8
    refuse(lie, E.PayloadGapTooLong, f"payload_offset {offset}, must be {packed} .* {region_end}\\)$")


def test_payload_out_of_bounds(blob):
    # The file was cut inside conv2_1's payload (328..768) and file_size patched to match.
    refuse(reseal(blob[:700]), E.PayloadOutOfBounds, "conv2_1: payload 328..768 extends past the end")
    # conv2_1 claims 32 outputs, with the payload size they imply (256 + 48 + 576): 880 bytes from 328.
    lie = reseal(set_record(blob, CONV2, out_channels=32, payload_size=880))
    refuse(lie, E.PayloadOutOfBounds, "conv2_1: payload 328..1208 extends past the end of the file")


def test_huge_channel_counts_allocate_nothing(blob):
    """4096x4096 channels with a matching payload_size: refused by arithmetic, not by a failed allocation."""
    # conv1_1 3->4096 with the payload size that implies (alpha + bias + 3-bit masks), pool1 4096,
    # conv2_1 4096->4096 at 5 bits (a 111 MB payload); decoded, that would be 17M alphas and codes.
    lie = set_record(blob, CONV1, out_channels=4096, payload_size=3 * 4096 + 6144 + 41472)
    lie = set_record(lie, POOL1, in_channels=4096, out_channels=4096)
    lie = reseal(set_record(lie, CONV2, in_channels=4096, out_channels=4096, mask_bits=5))
    tracemalloc.start()
    try:
        refuse(lie, E.PayloadOutOfBounds, "conv1_1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_nonzero_padding_between_payloads(blob):
    # A byte in the gap 325..327 carries data; no CRC covers it, the zero check must.
    hidden = blob[:326] + b"\x42" + blob[327:]
    refuse(reseal(hidden), E.NonZeroPadding, "padding bytes 325..328")


def test_nonzero_padding_bits_in_last_mask_byte():
    """The golden blob's mask ends with 4 padding bits (0x04 -> 0x84 sets one), CRC recomputed."""
    from test_golden_blob import GOLDEN

    assert GOLDEN[-1] == 0x04
    lie = reseal(GOLDEN[:-1] + b"\x84")
    refuse(lie, E.NonZeroPadding, "conv1_1: padding bits in the last byte of the mask")


def test_payload_crc(blob):
    # A mask byte of conv2_1 changed, its payload CRC not recomputed.
    damaged = blob[:700] + bytes([blob[700] ^ 0x10]) + blob[701:]
    refuse(reseal(damaged, payloads=False), E.PayloadCrcMismatch, "layer conv2_1")


def test_trailing_data(blob):
    # Bytes appended after the last payload, file_size updated to match: a polyglot tail.
    refuse(reseal(blob + bytes(8)), E.TrailingData, "8 bytes follow the last payload")


def test_a_longer_zero_gap_is_refused(blob):
    """SPEC 3: one valid blob per model. 8 extra zero bytes before conv2_1, its offset moved to match.

    Every other check passes (the gap is zero, the payload is intact and ends the file), so only the
    first-aligned-offset rule can refuse it.
    """
    moved = reseal(set_record(blob[:328] + bytes(8) + blob[328:], CONV2, payload_offset=336))
    assert len(moved) == 776 and moved[336:] == blob[328:]
    refuse(moved, E.PayloadGapTooLong, "layer conv2_1: payload_offset 336, must be 328")


# --- accumulator bound (SPEC 4.5, the reader's last check) ----------------------------------------

CONV2_BIAS = slice(328 + 16 * 8, 328 + 16 * 8 + 24)  # conv2_1's bias region: after 16x8 alphas, 24 bytes


def test_accumulator_overflow(blob):
    """Every conv2_1 bias set to 2047 and bias_shift to 31, CRCs recomputed: well-formed but unsafe."""
    # Two 12-bit fields of 0x7ff, LSB first, are the 3 bytes ff f7 7f; 16 biases are 8 such pairs.
    lie = blob[: CONV2_BIAS.start] + bytes.fromhex("ff f7 7f") * 8 + blob[CONV2_BIAS.stop :]
    lie = reseal(set_record(lie, CONV2, bias_shift=31))
    conv2 = from_bytes(blob).layers[CONV2]
    # SPEC 4.5 by hand: the bias term is the same for every output, so the largest sum |W| decides.
    abs_w = conv2.alpha.astype(np.int64)[:, :, None, None] * np.abs(2 * conv2.mask.astype(np.int64) - 3)
    rounding = 1 << (conv2.out_shift - 1) if conv2.out_shift else 0
    bound = 2047 * 2**31 + 255 * int(abs_w.sum(axis=(1, 2, 3)).max()) + rounding
    refuse(lie, E.AccumulatorOverflow, f"^layer conv2_1: worst-case accumulator {bound} exceeds 2147483647")
    assert conv2.mask_bits == 2 and bound > 2047 * 2**31


def edge_model(out_shift: int) -> ChipModel:
    """One conv whose SPEC 4.5 bound is exactly 2^31 - 1 at out_shift 0, and 2^31 at out_shift 1.

    X = max(50, 255 - 50) = 205; one kernel with alpha 165 and |M| = 1 (x8) and 23 (x1), the others
    alpha 0: sum |W| = 165 * 31; bias 2047 << 20 = 2146435072; 2146435072 + 205 * 165 * 31 = 2^31 - 1.
    """
    mask = np.full((1, 3, 3, 3), 16, np.uint8)  # 5-bit code 16 -> M = 2 * 16 - 31 = 1
    mask[0, 0, 1, 1] = 27  # M = 23
    conv = ConvLayer(
        name="conv1_1",
        mask_bits=5,
        weight_shift=0,
        bias_shift=20,
        out_shift=out_shift,
        alpha=np.array([[165, 0, 0]], np.uint8),
        mask=mask,
        bias=np.array([-2047], np.int16),
    )
    return ChipModel(4, 4, C.ChannelOrder.RGB, (50, 50, 50), (conv,))


def test_accumulator_bound_edge():
    """2^31 - 1 is read; one more (the rounding term of out_shift 1, patched into the file) is refused."""
    edge = to_bytes(edge_model(out_shift=0))
    assert from_bytes(edge) == edge_model(out_shift=0)
    refuse(reseal(set_record(edge, 0, out_shift=1)), E.AccumulatorOverflow, "accumulator 2147483648 exceeds")
    with pytest.raises(E.AccumulatorOverflow):  # the writer draws the line at the same place
        to_bytes(edge_model(out_shift=1))


def test_accumulator_bound_is_checked_last(blob):
    """An unsafe layer in a file that also fails a structural check reports the structural failure."""
    lie = reseal(set_record(blob, CONV2, bias_shift=31))
    refuse(lie, E.AccumulatorOverflow, "conv2_1")
    refuse(reseal(lie + bytes(8)), E.TrailingData)
    damaged = lie[:700] + bytes([lie[700] ^ 0x10]) + lie[701:]
    refuse(reseal(damaged, payloads=False), E.PayloadCrcMismatch)


# --- files ----------------------------------------------------------------------------------------


def test_read_blob_file_errors(tmp_path, sample_blob_path):
    assert read_blob(sample_blob_path) == from_bytes(sample_blob_path.read_bytes())
    with pytest.raises(E.BlobUnreadable, match="cannot read"):
        read_blob(tmp_path / "missing.blob")
    with pytest.raises(E.BlobUnreadable):
        read_blob(tmp_path)  # a folder


def test_oversized_file_is_refused_before_reading(tmp_path, monkeypatch):
    big = tmp_path / "big.blob"
    big.write_bytes(bytes(100))
    monkeypatch.setattr(C, "MAX_FILE_SIZE", 99)
    with pytest.raises(E.FileTooLarge, match="100 bytes, more than the 99"):
        load_blob_bytes(big)
