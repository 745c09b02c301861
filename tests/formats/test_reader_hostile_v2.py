"""Hostile chip format v2 blobs: every v2 refusal of the reader (SPEC 3, 3.1, 3.4, 3.5, 5), by its error.

The base is a small v2 model (`v2_blob`), laid out by SPEC 3.1 (typed here, not imported):

    header 0..63, table 64..255 (4 records)
    conv1_1  3->5, m 3, a 5, no bitmap   payload 256..324: alpha 10 B (75 bits: 5 padding bits),
                                         bias 8 B, mask 51 B
    pool1    5 channels                  alpha_bits 0, flags 0, no payload
    conv2_1  5->6, m 2, a 8, bitmap      payload 328..389: presence 4 B (30 bits: 2 padding bits,
                                         15 present), alpha 15 B, bias 9 B, mask 34 B
    conv2_2  6->7, m 1, a 3, bitmap      payload 392..448: presence 6 B (42 bits, 26 present), alpha
                                         10 B (78 bits: 2 padding bits), bias 11 B, mask 30 B

Record bytes 28..31 (blobcraft's `reserved_b`) are alpha_bits, flags and two reserved bytes in v2.
Unless a test says otherwise, `reseal` recomputes every CRC and file_size after the lie, so that the
v2 check under test is the one that fires, not a CRC.
"""

from __future__ import annotations

import tracemalloc

import pytest
from blobcraft import header, record, reseal, set_header, set_record

from chipq.formats import constants as C
from chipq.formats import errors as E
from chipq.formats.model import ChipModel
from chipq.formats.reader import from_bytes
from chipq.formats.synthetic import random_model
from chipq.formats.writer import to_bytes

CONV1, POOL1, CONV2, CONV3 = 0, 1, 2, 3


def ceil8(bits: int) -> int:
    return -(-bits // 8)


def v2_model() -> ChipModel:
    return random_model(
        [3, 2, 1], [5, "M", 6, 7], input_hw=(8, 8), seed=11, alpha_bits=[5, 8, 3], keep=[None, 0.5, 0.6]
    )


@pytest.fixture(scope="module")
def v2_blob() -> bytes:
    blob = to_bytes(v2_model())
    assert header(blob)["version"] == 2 and len(blob) == 449
    assert [record(blob, i)["payload_offset"] for i in range(4)] == [256, 0, 328, 392]
    assert [v2_fields(blob, i) for i in range(4)] == [(5, 0), (0, 0), (8, 1), (3, 1)]
    return blob


def v2_fields(blob: bytes, index: int) -> tuple[int, int]:
    """(alpha_bits, flags) of record `index`: bytes 28 and 29."""
    raw = record(blob, index)["reserved_b"]
    return raw[0], raw[1]


def set_v2(blob: bytes, index: int, alpha_bits: int | None = None, flags: int | None = None, tail: bytes = b"\0\0") -> bytes:
    """Record `index` with byte 28 (alpha_bits), byte 29 (flags) and bytes 30..31 replaced."""
    old_alpha, old_flags = v2_fields(blob, index)
    raw = bytes([old_alpha if alpha_bits is None else alpha_bits, old_flags if flags is None else flags]) + tail
    return set_record(blob, index, reserved_b=raw)


def regions(blob: bytes, index: int) -> dict[str, tuple[int, int]]:
    """(start, size) of each region of conv record `index`, from SPEC 3.1 and the bitmap's population."""
    rec = record(blob, index)
    out_ch, in_ch, m = rec["out_channels"], rec["in_channels"], rec["mask_bits"]
    alpha_bits, flags = v2_fields(blob, index)
    alpha_bits = alpha_bits or 8  # a v1 record
    start = rec["payload_offset"]
    presence = ceil8(out_ch * in_ch) if flags & 1 else 0
    stored = out_ch * in_ch
    if presence:
        stored = int.from_bytes(blob[start : start + presence], "little").bit_count()
    sizes = {
        "presence": presence,
        "alpha": ceil8(alpha_bits * stored),
        "bias": ceil8(12 * out_ch),
        "mask": ceil8(9 * m * stored),
    }
    out = {}
    for name, size in sizes.items():
        out[name] = (start, size)
        start += size
    return out


def refuse(data: bytes, error: type[E.FormatError], *fragments: str) -> str:
    """`from_bytes` refuses `data` with `error`, one line naming every fragment."""
    with pytest.raises(error) as info:
        from_bytes(data)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def with_byte(blob: bytes, position: int, value: int) -> bytes:
    return blob[:position] + bytes([value]) + blob[position + 1 :]


def test_the_base_blob_is_valid_and_canonical(v2_blob):
    model = from_bytes(v2_blob)
    assert model == v2_model() and to_bytes(model) == v2_blob
    assert from_bytes(reseal(v2_blob)) == model  # reseal alone changes nothing
    # the layout in the module docstring, from SPEC 3.1
    assert regions(v2_blob, CONV2) == {"presence": (328, 4), "alpha": (332, 15), "bias": (347, 9), "mask": (356, 34)}
    assert regions(v2_blob, CONV3) == {"presence": (392, 6), "alpha": (398, 10), "bias": (408, 11), "mask": (419, 30)}
    assert sum(size for _, size in regions(v2_blob, CONV1).values()) == record(v2_blob, CONV1)["payload_size"] == 69


# --- the version and the record fields ------------------------------------------------------------


def test_v1_blob_relabelled_version_2_has_alpha_bits_0(sample_blob_bytes):
    """A v1 record has 0 at byte 28; in a v2 blob a conv's alpha width is 1..8."""
    lie = reseal(set_header(sample_blob_bytes, version=2))
    refuse(lie, E.FieldOutOfRange, "layer conv1_1", "alpha_bits 0 not in 1..8")


def test_v1_blob_relabelled_version_2_with_alpha_bits_8(sample_blob_bytes):
    """Every conv at a = 8 without a flag uses no v2 feature: SPEC 2 says such a blob is version 1.

    The payloads are v1's bytes, so every size and CRC check passes; only the version lies. Accepted,
    the model has two valid blobs (this one and the v1 original), and the reader fuzz's property (an
    accepted blob re-serialises to its own bytes) fails on it: `to_bytes` writes version 1.
    """
    lie = set_header(sample_blob_bytes, version=2)
    for index in (0, 2):  # conv1_1, conv2_1 (record 1 is pool1)
        lie = set_v2(lie, index, alpha_bits=8)
    lie = reseal(lie)
    refuse(lie, E.BadHeaderField, "version 2", "no conv layer uses a v2 feature")


def test_v2_blob_relabelled_version_1(v2_blob):
    """v2 fields in a v1 blob are reserved bytes: the first record with one is refused."""
    refuse(reseal(set_header(v2_blob, version=1)), E.NonZeroReserved, "layer 0", "reserved bytes")


@pytest.mark.parametrize("version", [0, 3, 0xFFFF])
def test_versions_outside_the_whitelist(v2_blob, version):
    refuse(reseal(set_header(v2_blob, version=version)), E.UnsupportedVersion, f"format version {version}", "[1, 2]")


@pytest.mark.parametrize("alpha_bits", [9, 16, 255])
def test_alpha_bits_above_8(v2_blob, alpha_bits):
    lie = reseal(set_v2(v2_blob, CONV1, alpha_bits=alpha_bits))
    refuse(lie, E.FieldOutOfRange, "layer conv1_1", f"alpha_bits {alpha_bits} not in 1..8")


def test_alpha_bits_0_on_a_v2_conv(v2_blob):
    refuse(reseal(set_v2(v2_blob, CONV3, alpha_bits=0)), E.FieldOutOfRange, "layer conv2_2", "alpha_bits 0 not in 1..8")


@pytest.mark.parametrize("flags", [2, 3, 0x80, 0xFF])
def test_unknown_flag_bits(v2_blob, flags):
    """Only bit 0 (KERNEL_PRESENCE) is defined; any other bit is refused, with or without bit 0."""
    lie = reseal(set_v2(v2_blob, CONV2, flags=flags))
    refuse(lie, E.FieldOutOfRange, "layer conv2_1", f"flags {flags} not in 0..1")


@pytest.mark.parametrize(("field", "value"), [("alpha_bits", 8), ("alpha_bits", 1), ("flags", 1)])
def test_v2_fields_on_a_pool(v2_blob, field, value):
    lie = reseal(set_v2(v2_blob, POOL1, **{field: value}))
    refuse(lie, E.FieldOutOfRange, "layer pool1", f"{field} {value} not in 0..0")


@pytest.mark.parametrize("tail", [b"\x01\0", b"\0\x80"])
def test_v2_record_reserved_bytes_30_31(v2_blob, tail):
    refuse(reseal(set_v2(v2_blob, CONV2, tail=tail)), E.NonZeroReserved, "layer 2", "reserved bytes")


@pytest.mark.parametrize(("position", "value"), [(28, 8), (28, 1), (29, 1), (29, 0x80)])
def test_v1_record_bytes_28_29_are_reserved(sample_blob_bytes, position, value):
    """In a v1 blob the v2 fields do not exist: a nonzero byte 28 or 29 is a reserved byte set."""
    lie = reseal(with_byte(sample_blob_bytes, 64 + 48 * 2 + position, value))  # conv2_1's record
    refuse(lie, E.NonZeroReserved, "layer 2", "reserved bytes")


# --- the presence bitmap --------------------------------------------------------------------------


def _flip_presence_bit(blob: bytes, index: int, to: int) -> bytes:
    """The first presence bit of conv record `index` whose value is not `to`, set to `to`."""
    start, size = regions(blob, index)["presence"]
    rec = record(blob, index)
    bitmap = int.from_bytes(blob[start : start + size], "little")
    bit = next(k for k in range(rec["out_channels"] * rec["in_channels"]) if (bitmap >> k) & 1 != to)
    bitmap ^= 1 << bit
    return blob[:start] + bitmap.to_bytes(size, "little") + blob[start + size :]


@pytest.mark.parametrize(("to", "present"), [(1, 16), (0, 14)])
def test_bitmap_population_disagrees_with_payload_size(v2_blob, to, present):
    """One presence bit more (or fewer) than the payload holds kernels for: P = 16 (14) needs a
    payload of 4 + 16 + 9 + 36 = 65 (4 + 14 + 9 + 32 = 59) bytes, the record says 62."""
    lie = reseal(_flip_presence_bit(v2_blob, CONV2, to))
    want = 4 + present + 9 + ceil8(18 * present)
    refuse(lie, E.PayloadSizeMismatch, "layer conv2_1", f"payload_size 62, its fields and {present} present kernels give {want}")


@pytest.mark.parametrize("delta", [-1, 1, 8])
def test_payload_size_disagrees_with_the_bitmap(v2_blob, delta):
    """The bitmap is intact and payload_size lies, both ways (the last layer: a longer payload still
    ends inside a file extended to match)."""
    lie = set_record(v2_blob, CONV3, payload_size=57 + delta)
    lie = lie + b"\0" * max(0, delta)
    refuse(reseal(lie), E.PayloadSizeMismatch, "layer conv2_2", f"payload_size {57 + delta}", "26 present kernels give 57")


def test_flag_cleared_on_a_pruned_layer(v2_blob):
    """Without the flag the payload is read as all 42 kernels' (no bitmap): the size disagrees."""
    lie = reseal(set_v2(v2_blob, CONV3, flags=0))
    refuse(lie, E.PayloadSizeMismatch, "layer conv2_2", "payload_size 57, its fields give")


def test_flag_set_on_an_unpruned_layer(v2_blob):
    """conv1_1's first 2 bytes (alpha codes) read as a 15-bit bitmap: its padding bit is set here."""
    lie = reseal(set_v2(v2_blob, CONV1, flags=1))
    refuse(lie, E.NonZeroPadding, "layer conv1_1", "presence region")
    # with the padding bit cleared (and so one code changed), the population gives the wrong size
    lie = reseal(with_byte(lie, 257, lie[257] & 0x7F))
    refuse(lie, E.PayloadSizeMismatch, "layer conv1_1", "present kernels give")


@pytest.mark.parametrize("size", [0, 3, 5])
def test_payload_too_short_for_the_bitmap(v2_blob, size):
    """conv2_2's bitmap needs ceil(42/8) = 6 bytes; a smaller payload is refused before it is read."""
    lie = set_record(v2_blob, CONV3, payload_size=size)
    lie = lie[: 392 + size]  # the file ends with the short payload, so nothing trails it
    refuse(reseal(lie), E.PayloadSizeMismatch, "layer conv2_2", f"payload_size {size} cannot hold the 6-byte presence bitmap")


def test_bitmap_beyond_the_end_of_the_file(v2_blob):
    """payload_size points past the end of the file: refused before a byte of the bitmap is read."""
    lie = reseal(set_record(v2_blob, CONV3, payload_size=1 << 31))
    refuse(lie, E.PayloadOutOfBounds, "layer conv2_2", "extends past the end of the file")


def test_huge_bitmap_claim_allocates_nothing(v2_blob):
    """conv2_2 claiming 4096 output channels (a 3,072-byte bitmap) in its 57-byte payload: refused by
    comparing Python ints, with no array allocated."""
    lie = reseal(set_record(v2_blob, CONV3, out_channels=C.MAX_CHANNELS))
    tracemalloc.start()
    try:
        refuse(lie, E.PayloadSizeMismatch, "layer conv2_2", "cannot hold the 3072-byte presence bitmap")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


@pytest.mark.parametrize(("index", "name", "padding"), [(CONV2, "conv2_1", 0xC0), (CONV3, "conv2_2", 0x04)])
def test_bitmap_padding_bits_set(v2_blob, index, name, padding):
    """30 (42) kernels leave 2 (6) padding bits in the bitmap's last byte; setting one is refused,
    even though the population (and so every size) would then be checked against a wrong P."""
    start, size = regions(v2_blob, index)["presence"]
    last = start + size - 1
    lie = reseal(with_byte(v2_blob, last, v2_blob[last] | padding))
    refuse(lie, E.NonZeroPadding, f"layer {name}", "presence region")


@pytest.mark.parametrize(("index", "name", "padding"), [(CONV1, "conv1_1", 0x80), (CONV3, "conv2_2", 0x40)])
def test_alpha_region_padding_bits_set(v2_blob, index, name, padding):
    """conv1_1: 15 codes of 5 bits = 75 bits, 5 padding bits; conv2_2: 26 codes of 3 bits = 78 bits, 2."""
    start, size = regions(v2_blob, index)["alpha"]
    last = start + size - 1
    assert v2_blob[last] & padding == 0
    lie = reseal(with_byte(v2_blob, last, v2_blob[last] | padding))
    refuse(lie, E.NonZeroPadding, f"layer {name}", "alpha region")


def test_mask_region_padding_bits_of_a_pruned_layer(v2_blob):
    """conv2_1 stores 15 kernels of 18 mask bits: 270 bits, 2 padding bits in the last byte."""
    start, size = regions(v2_blob, CONV2)["mask"]
    last = start + size - 1
    lie = reseal(with_byte(v2_blob, last, v2_blob[last] | 0x80))
    refuse(lie, E.NonZeroPadding, "layer conv2_1", "mask region")


def test_payload_crc_without_reseal(v2_blob):
    """The same bitmap lie with the CRCs left alone: a size check still fires first (SPEC 5 order)."""
    lie = _flip_presence_bit(v2_blob, CONV2, 1)
    refuse(lie, E.PayloadSizeMismatch, "layer conv2_1")
    # a lie that keeps every size (two bits swapped) reaches the payload CRC
    start, _ = regions(v2_blob, CONV2)["presence"]
    bitmap = int.from_bytes(v2_blob[start : start + 4], "little")
    on = next(k for k in range(30) if bitmap >> k & 1)
    off = next(k for k in range(30) if not bitmap >> k & 1)
    swapped = (bitmap ^ (1 << on) ^ (1 << off)).to_bytes(4, "little")
    lie = v2_blob[:start] + swapped + v2_blob[start + 4 :]
    refuse(lie, E.PayloadCrcMismatch, "layer conv2_1")
    assert isinstance(from_bytes(reseal(lie)), ChipModel)  # resealed, it is another valid model


# --- valid edge cases -----------------------------------------------------------------------------


def test_presence_flag_with_every_kernel_absent_is_valid():
    """P = 0: the payload is the bitmap (all zero) and the biases; no alpha, no mask."""
    model = random_model([2, 1], [4, 5], input_hw=(6, 6), seed=5, alpha_bits=[3, 8], keep=[0.5, 0.0])
    blob = to_bytes(model)
    rec = record(blob, 1)
    assert v2_fields(blob, 1) == (8, 1)
    assert rec["payload_size"] == ceil8(20) + ceil8(60)  # 3 bytes of zero bits + 8 bytes of bias
    start = rec["payload_offset"]
    assert blob[start : start + 3] == b"\0\0\0"
    decoded = from_bytes(blob)
    conv = decoded.conv_layers()[1]
    assert decoded == model and conv.kept_kernels() == 0 and not conv.present.any()
    assert not conv.alpha.any() and not conv.mask.any()


def test_presence_flag_with_every_kernel_present_is_valid():
    model = random_model([2], [4], input_hw=(6, 6), seed=5, alpha_bits=8, keep=1.0)
    blob = to_bytes(model)
    assert header(blob)["version"] == 2 and v2_fields(blob, 0) == (8, 1)
    conv = from_bytes(blob).conv_layers()[0]
    assert conv.present.all() and conv.kept_kernels() == 12 and to_bytes(from_bytes(blob)) == blob


def test_decoded_absent_kernels_weigh_zero(v2_blob):
    for conv in from_bytes(v2_blob).conv_layers():
        if conv.present is not None:
            absent = ~conv.present
            assert not conv.alpha[absent].any() and not conv.mask[absent].any()
            assert conv.alpha[conv.present].all()  # random_model keeps every present alpha nonzero
        step = C.alpha_step(conv.alpha_bits)
        assert not (conv.alpha % step).any()
    assert from_bytes(v2_blob).conv_layers()[2].alpha_codes().max() < 1 << 3  # conv2_2's 3-bit codes
