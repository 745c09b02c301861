"""Edit blobs field by field with `struct`, independently of chipq's reader and writer.

Hostile-file tests take a valid blob, make one field lie, then (by default) recompute every CRC and
`file_size`, so the structural check under test is what fires rather than a CRC. The layouts below
are typed from SPEC 2 and 3, not imported, so a layout bug in the reader cannot hide here.
"""

from __future__ import annotations

import struct
import zlib

HEADER_FIELDS = [
    ("magic", "8s"), ("version", "H"), ("header_size", "H"), ("layer_record_size", "H"),
    ("alignment", "H"), ("layer_count", "I"), ("flags", "I"), ("file_size", "Q"),
    ("input_height", "H"), ("input_width", "H"), ("input_channels", "B"), ("channel_order", "B"),
    ("mean_0", "B"), ("mean_1", "B"), ("mean_2", "B"), ("reserved", "15s"),
    ("table_crc32", "I"), ("header_crc32", "I"),
]  # fmt: skip
RECORD_FIELDS = [
    ("kind", "B"), ("reserved_a", "3s"), ("name", "16s"), ("in_channels", "H"), ("out_channels", "H"),
    ("mask_bits", "B"), ("weight_shift", "B"), ("bias_shift", "B"), ("out_shift", "B"),
    ("reserved_b", "4s"), ("payload_offset", "Q"), ("payload_size", "I"), ("payload_crc32", "I"),
]  # fmt: skip
HEADER = struct.Struct("<" + "".join(f for _, f in HEADER_FIELDS))
RECORD = struct.Struct("<" + "".join(f for _, f in RECORD_FIELDS))
TABLE_START = 64
assert HEADER.size == 64 and RECORD.size == 48


def header(blob: bytes) -> dict:
    return dict(zip([n for n, _ in HEADER_FIELDS], HEADER.unpack_from(blob, 0)))


def record(blob: bytes, index: int) -> dict:
    return dict(zip([n for n, _ in RECORD_FIELDS], RECORD.unpack_from(blob, TABLE_START + 48 * index)))


def set_header(blob: bytes, **fields) -> bytes:
    values = header(blob) | fields
    return HEADER.pack(*(values[n] for n, _ in HEADER_FIELDS)) + blob[64:]


def set_record(blob: bytes, index: int, **fields) -> bytes:
    values = record(blob, index) | fields
    start = TABLE_START + 48 * index
    return blob[:start] + RECORD.pack(*(values[n] for n, _ in RECORD_FIELDS)) + blob[start + 48 :]


def reseal(blob: bytes, *, payloads: bool = True, size: bool = True, table: bool = True) -> bytes:
    """Recompute payload CRCs, the table CRC, file_size and the header CRC (each optional but the last)."""
    count = header(blob)["layer_count"]
    records_in_file = max(0, min(count, (len(blob) - TABLE_START) // 48))
    if payloads:
        for index in range(records_in_file):
            rec = record(blob, index)
            start, end = rec["payload_offset"], rec["payload_offset"] + rec["payload_size"]
            if rec["kind"] == 1 and end <= len(blob):
                blob = set_record(blob, index, payload_crc32=zlib.crc32(blob[start:end]))
    fields = {}
    if table:
        fields["table_crc32"] = zlib.crc32(blob[TABLE_START : TABLE_START + 48 * count])
    if size:
        fields["file_size"] = len(blob)
    blob = set_header(blob, **fields)
    return blob[:60] + zlib.crc32(blob[:60]).to_bytes(4, "little") + blob[64:]


def name_field(text: bytes) -> bytes:
    return text.ljust(16, b"\0")
