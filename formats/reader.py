"""Read a chip format blob (v1 or v2), treating it as hostile (SPEC section 5).

Every check runs in the order SPEC 5 lists, and all the structural ones run before any array sized by
a file field is allocated: they only slice the input through a `memoryview` and compare Python ints
(which cannot overflow). Only when the whole file has passed are the payloads decoded; the last
check, the accumulator bound of SPEC 4.5, needs the decoded arrays and runs on them.

The header and record layouts, and the checks that do not depend on the bytes (names, field ranges,
the chain rule), are shared with `writer`, so the writer refuses exactly what the reader refuses.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np

from chipq.formats import constants as C
from chipq.formats import errors as E
from chipq.formats.bounds import check_accumulator_bounds
from chipq.formats.fileio import FileRefused, open_regular
from chipq.formats.model import ChipModel, ConvLayer, Layer, PoolLayer
from chipq.formats.packing import conv_region_sizes, packed_size, padding_bits_zero, unpack_int12, unpack_uint

# SPEC 2: magic, version, header_size, layer_record_size, alignment, layer_count, flags, file_size,
# input_height, input_width, input_channels, channel_order, input_mean[3], reserved[15],
# table_crc32, header_crc32. Little-endian, no implicit padding.
HEADER_STRUCT = struct.Struct("<8s4H2IQ2H2B3B15s2I")
# SPEC 3: kind, reserved[3], name[16], in_channels, out_channels, mask_bits, weight_shift,
# bias_shift, out_shift, alpha_bits, flags, reserved[2], payload_offset, payload_size, payload_crc32.
# alpha_bits and flags are v2 fields: a v1 record has zeros there (v1's reserved[4]).
RECORD_STRUCT = struct.Struct("<B3s16s2H6B2sQ2I")
HEADER_CRC_SPAN = C.HEADER_SIZE - 4  # header_crc32 covers every header byte before itself

assert HEADER_STRUCT.size == C.HEADER_SIZE and RECORD_STRUCT.size == C.LAYER_RECORD_SIZE


@dataclass(frozen=True)
class Header:
    """The 64-byte header, field for field (SPEC 2)."""

    magic: bytes
    version: int
    header_size: int
    layer_record_size: int
    alignment: int
    layer_count: int
    flags: int
    file_size: int
    input_height: int
    input_width: int
    input_channels: int
    channel_order: int
    input_mean: tuple[int, int, int]
    reserved: bytes
    table_crc32: int
    header_crc32: int

    @classmethod
    def unpack(cls, buf: bytes | memoryview) -> Header:
        f = HEADER_STRUCT.unpack_from(buf, 0)
        return cls(*f[:12], tuple(f[12:15]), *f[15:])

    def pack(self) -> bytes:
        f = astuple(self)
        return HEADER_STRUCT.pack(*f[:12], *self.input_mean, *f[13:])


@dataclass(frozen=True)
class LayerRecord:
    """One 48-byte layer table record, field for field (SPEC 3)."""

    kind: int
    reserved_a: bytes
    name: bytes
    in_channels: int
    out_channels: int
    mask_bits: int
    weight_shift: int
    bias_shift: int
    out_shift: int
    alpha_bits: int
    flags: int
    reserved_b: bytes
    payload_offset: int
    payload_size: int
    payload_crc32: int

    @classmethod
    def unpack(cls, buf: bytes | memoryview, offset: int) -> LayerRecord:
        return cls(*RECORD_STRUCT.unpack_from(buf, offset))

    def pack(self) -> bytes:
        return RECORD_STRUCT.pack(*astuple(self))


def read_blob(path: str | os.PathLike) -> ChipModel:
    """Read and check the blob at `path`; see `from_bytes`. Every message starts with the path."""
    return read_blob_bytes(path)[0]


def read_blob_bytes(path: str | os.PathLike) -> tuple[ChipModel, bytes]:
    """`read_blob`, with the bytes it read (their size, their hash). Every message starts with the path."""
    data = load_blob_bytes(path)
    try:
        return from_bytes(data), data
    except E.FormatError as exc:
        raise type(exc)(f"{path}: {exc}") from None


def load_blob_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of the regular file at `path`, refusing a file over `MAX_FILE_SIZE` before reading it.

    A FIFO, a device (``/dev/zero``), a folder or a socket is refused without reading a byte
    (`chipq.formats.fileio.open_regular`), so nothing blocks or reads forever.

    Raises:
        BlobUnreadable: the file cannot be opened or read, or is not a regular file.
        FileTooLarge: the file is larger than the format allows.
    """
    path = Path(path)
    try:
        with open_regular(path, "blob") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > C.MAX_FILE_SIZE:
                raise E.FileTooLarge(f"{path}: {size} bytes, more than the {C.MAX_FILE_SIZE} a blob may have")
            return handle.read(C.MAX_FILE_SIZE + 1)  # bounded even if the file grew after fstat
    except FileRefused as exc:
        raise E.BlobUnreadable(str(exc)) from None
    except OSError as exc:
        raise E.BlobUnreadable(f"{path}: cannot read ({exc.strerror or exc})") from None


def from_bytes(data: bytes | bytearray | memoryview) -> ChipModel:
    """Check a whole blob (SPEC 5, in order) and decode it.

    Args:
        data: the complete file.

    Returns:
        The model the blob holds.

    Raises:
        FormatError: a subclass naming the first check that failed, the field or layer and the values.
    """
    view = memoryview(data).cast("B")
    header = check_header(view)
    records = check_table(view, header)
    chain = ChainChecker(header.input_channels, header.input_height, header.input_width)
    seen: set[str] = set()
    region_end = C.HEADER_SIZE + header.layer_count * C.LAYER_RECORD_SIZE  # end of the table
    names = []
    kept: list[int | None] = []
    for index, record in enumerate(records):
        name = check_record(index, record, seen, header.version)
        chain.add(name, record.kind, record.in_channels, record.out_channels)
        count = None
        if record.kind == C.LayerKind.CONV3X3_RELU:
            region_end, count = _check_payload(view, name, record, region_end)
        names.append(name)
        kept.append(count)
    _check_version_needed(header.version, records)
    if region_end != len(view):
        raise E.TrailingData(
            f"{len(view) - region_end} bytes follow the last payload (it ends at {region_end}, "
            f"the file at {len(view)})"
        )
    # Every structural check has passed: only now allocate arrays, each bounded by a payload inside
    # the file.
    layers = tuple(_decode_layer(view, name, rec, count) for name, rec, count in zip(names, records, kept))
    model = ChipModel(
        input_height=header.input_height,
        input_width=header.input_width,
        channel_order=C.ChannelOrder(header.channel_order),
        input_mean=header.input_mean,
        layers=layers,
    )
    # A well-formed blob can still make a chip's 32-bit accumulator wrap: refuse it as the writer would.
    check_accumulator_bounds(model)
    return model


def _check_version_needed(version: int, records: list[LayerRecord]) -> None:
    """SPEC 2: version 2 only if some conv uses a v2 feature, so that each model has one valid blob.

    Runs once every record has passed its own checks (a v2 conv's alpha_bits is then 1..8).
    """
    if version != C.FORMAT_V2:
        return
    for record in records:
        if record.kind == C.LayerKind.CONV3X3_RELU and (record.alpha_bits != C.ALPHA_BITS or record.flags):
            return
    raise E.BadHeaderField(
        "header: version 2, but no conv layer uses a v2 feature (alpha_bits below 8 or KERNEL_PRESENCE): "
        "such a blob is version 1"
    )


def check_header(view: memoryview) -> Header:
    """SPEC 5 up to the layer count, plus the input fields; returns the parsed header."""
    size = len(view)
    if size < C.HEADER_SIZE:
        raise E.TruncatedFile(f"file is {size} bytes, shorter than the {C.HEADER_SIZE}-byte header")
    header = Header.unpack(view)
    if header.magic != C.MAGIC:
        raise E.BadMagic(
            f"not a chipq blob: starts with {header.magic.hex(' ')}, expected {C.MAGIC.hex(' ')}"
        )
    if header.version not in C.READABLE_VERSIONS:
        raise E.UnsupportedVersion(
            f"format version {header.version} not readable (this chipq reads {sorted(C.READABLE_VERSIONS)})"
        )
    for field, want in (
        ("header_size", C.HEADER_SIZE),
        ("layer_record_size", C.LAYER_RECORD_SIZE),
        ("alignment", C.ALIGNMENT),
        ("flags", 0),
    ):
        if getattr(header, field) != want:
            raise E.BadHeaderField(f"header: {field} {getattr(header, field)}, the format requires {want}")
    crc = zlib.crc32(view[:HEADER_CRC_SPAN])
    if crc != header.header_crc32:
        raise E.HeaderCrcMismatch(
            f"header CRC32 {header.header_crc32:08x} does not match its bytes ({crc:08x}): header damaged"
        )
    if header.file_size > size:
        raise E.TruncatedFile(f"header says {header.file_size} bytes, the file has {size}: truncated")
    if header.file_size < size:
        raise E.FileSizeMismatch(f"header says {header.file_size} bytes, the file has {size}")
    if size > C.MAX_FILE_SIZE:
        raise E.FileTooLarge(f"file is {size} bytes, more than the {C.MAX_FILE_SIZE} a blob may have")
    if not 1 <= header.layer_count <= C.MAX_LAYERS:
        raise E.BadLayerCount(f"header: layer_count {header.layer_count} not in 1..{C.MAX_LAYERS}")
    check_input_fields(
        header.input_height,
        header.input_width,
        header.input_channels,
        header.channel_order,
        header.input_mean,
    )
    if any(header.reserved):
        raise E.NonZeroReserved(f"header: reserved bytes {header.reserved.hex(' ')} not zero")
    return header


def check_input_fields(height: int, width: int, channels: int, order: int, mean: tuple[int, ...]) -> None:
    """The input contract of SPEC 2 (shared with the writer)."""
    for field, value in (("input_height", height), ("input_width", width)):
        if not 1 <= value <= C.MAX_INPUT_SIDE:
            raise E.BadHeaderField(f"header: {field} {value} not in 1..{C.MAX_INPUT_SIDE}")
    if channels != C.INPUT_CHANNELS:
        raise E.BadHeaderField(f"header: input_channels {channels}, the format requires {C.INPUT_CHANNELS}")
    if order not in {o.value for o in C.ChannelOrder}:
        raise E.BadHeaderField(f"header: channel_order {order} not 0 (RGB) or 1 (BGR)")
    if len(mean) != C.INPUT_CHANNELS or not all(0 <= int(v) <= C.ACT_MAX for v in mean):
        raise E.BadHeaderField(f"header: input_mean {tuple(mean)} is not {C.INPUT_CHANNELS} values in 0..255")


def check_table(view: memoryview, header: Header) -> list[LayerRecord]:
    """Table bounds and CRC (SPEC 5); returns the unchecked records."""
    start = C.HEADER_SIZE
    end = start + header.layer_count * C.LAYER_RECORD_SIZE
    if end > len(view):
        raise E.TableOutOfBounds(
            f"layer table of {header.layer_count} records ends at byte {end}, the file at {len(view)}"
        )
    crc = zlib.crc32(view[start:end])
    if crc != header.table_crc32:
        raise E.TableCrcMismatch(
            f"layer table CRC32 {crc:08x} does not match the header's {header.table_crc32:08x}: table damaged"
        )
    return [LayerRecord.unpack(view, start + i * C.LAYER_RECORD_SIZE) for i in range(header.layer_count)]


def check_record(index: int, record: LayerRecord, seen: set[str], version: int) -> str:
    """Kind, reserved bytes, name (adds it to `seen`) and field ranges of one record; returns the name."""
    if record.kind not in {k.value for k in C.LayerKind}:
        known = ", ".join(f"{k.value} ({k.name})" for k in C.LayerKind)
        raise E.UnknownLayerKind(f"layer {index}: kind {record.kind} is not one of {known}")
    v1_reserved = bytes([record.alpha_bits, record.flags]) if version == C.FORMAT_V1 else b""
    if any(record.reserved_a) or any(v1_reserved) or any(record.reserved_b):
        seen_bytes = f"{record.reserved_a.hex(' ')} / {(v1_reserved + record.reserved_b).hex(' ')}"
        raise E.NonZeroReserved(f"layer {index}: reserved bytes {seen_bytes} not zero")
    name = decode_name(index, record.name)
    if name in seen:
        raise E.DuplicateLayerName(f"layer {index}: name {name} already used by an earlier layer")
    seen.add(name)
    check_fields(name, record, version)
    return name


def decode_name(index: int, raw: bytes) -> str:
    """The layer name in a 16-byte NUL-padded field; refuses anything SPEC 3 does not allow."""
    text, nul, rest = raw.partition(b"\0")
    if not nul or any(rest):
        raise E.BadLayerName(f"layer {index}: name field {raw!r} is not 1..15 bytes followed by NUL padding")
    name = text.decode("latin-1")  # a lossless view of the bytes; check_name refuses non-ASCII
    check_name(index, name)
    return name


def check_name(index: int, name: str) -> None:
    """A name of 1..15 characters from [A-Za-z0-9_.-] (shared with the writer)."""
    if not 1 <= len(name) <= C.NAME_SIZE - 1 or not set(name) <= C.NAME_CHARS:
        raise E.BadLayerName(
            f"layer {index}: name {name!r} is not 1..{C.NAME_SIZE - 1} characters from [A-Za-z0-9_.-]"
        )


def check_fields(name: str, record: LayerRecord, version: int) -> None:
    """The per-kind field ranges of SPEC 3 for a blob of `version` (shared with the writer)."""
    conv = record.kind == C.LayerKind.CONV3X3_RELU
    v2_conv = conv and version == C.FORMAT_V2
    ranges = {
        "alpha_bits": (C.MIN_ALPHA_BITS, C.ALPHA_BITS) if v2_conv else (0, 0),
        "flags": (0, C.KNOWN_LAYER_FLAGS) if v2_conv else (0, 0),
        "in_channels": (1, C.MAX_CHANNELS),
        "out_channels": (1, C.MAX_CHANNELS),
        "mask_bits": (C.MIN_MASK_BITS, C.MAX_MASK_BITS) if conv else (0, 0),
        "weight_shift": (0, C.WEIGHT_SHIFT_MAX) if conv else (0, 0),
        "bias_shift": (0, C.BIAS_SHIFT_MAX) if conv else (0, 0),
        "out_shift": (0, C.OUT_SHIFT_MAX) if conv else (0, 0),
    }
    if not conv:  # a pool has no payload
        ranges.update(payload_offset=(0, 0), payload_size=(0, 0), payload_crc32=(0, 0))
    for field, (low, high) in ranges.items():
        value = getattr(record, field)
        if not low <= value <= high:
            raise E.FieldOutOfRange(f"layer {name}: {field} {value} not in {low}..{high}")
    if not conv and record.out_channels != record.in_channels:
        raise E.FieldOutOfRange(
            f"layer {name}: pool out_channels {record.out_channels} "
            f"differs from in_channels {record.in_channels}"
        )


class ChainChecker:
    """The chain rule of SPEC 3, one layer at a time: channels follow, pools get at least 2x2."""

    def __init__(self, input_channels: int, height: int, width: int) -> None:
        self.channels = input_channels
        self.height = height
        self.width = width
        self.first = True

    def add(self, name: str, kind: int, in_channels: int, out_channels: int) -> None:
        if self.first and kind != C.LayerKind.CONV3X3_RELU:
            raise E.ChainMismatch(f"layer {name}: the first layer must be a conv, not kind {kind}")
        if in_channels != self.channels:
            source = "the input buffer has" if self.first else "the previous layer gives"
            raise E.ChainMismatch(f"layer {name}: in_channels {in_channels}, but {source} {self.channels}")
        if kind == C.LayerKind.MAXPOOL2X2:
            if self.height < C.POOL_SIZE or self.width < C.POOL_SIZE:
                raise E.MapTooSmall(
                    f"layer {name}: max-pool gets a {self.height}x{self.width} map, needs at least 2x2"
                )
            self.height //= C.POOL_SIZE
            self.width //= C.POOL_SIZE
        self.channels = out_channels
        self.first = False


def _check_payload(view: memoryview, name: str, record: LayerRecord, region_end: int) -> tuple[int, int | None]:
    """Offset, size, bounds, zero gap and CRC of one conv payload.

    Returns:
        Where the payload ends, and the number of present kernels of a layer with a presence bitmap
        (None without one).
    """
    offset, size = record.payload_offset, record.payload_size
    if offset % C.ALIGNMENT:
        raise E.MisalignedPayload(f"layer {name}: payload_offset {offset} not a multiple of {C.ALIGNMENT}")
    if offset < region_end:
        raise E.OverlappingPayload(
            f"layer {name}: payload_offset {offset} is inside the previous region (ends at {region_end})"
        )
    packed = first_payload_offset(region_end)
    if offset != packed:  # one valid blob per model: no freedom to shift payloads around
        raise E.PayloadGapTooLong(
            f"layer {name}: payload_offset {offset}, must be {packed} (the first multiple of "
            f"{C.ALIGNMENT} at or after the end of the previous region, {region_end})"
        )
    kept = None
    if _has_presence(record):  # the size follows from the bitmap, which must lie in the file first
        _check_in_file(view, name, offset, size)
        kept = _present_kernels(view, name, record)
    want = sum(_region_sizes(record, kept))
    if size != want:
        given = f"its fields and {kept} present kernels give" if kept is not None else "its fields give"
        raise E.PayloadSizeMismatch(f"layer {name}: payload_size {size}, {given} {want}")
    _check_in_file(view, name, offset, size)
    if np.frombuffer(view[region_end:offset], dtype=np.uint8).any():
        raise E.NonZeroPadding(
            f"layer {name}: padding bytes {region_end}..{offset} before the payload not zero"
        )
    _check_padding_bits(view, name, record, kept)
    crc = zlib.crc32(view[offset : offset + size])
    if crc != record.payload_crc32:
        raise E.PayloadCrcMismatch(
            f"layer {name}: payload CRC32 {crc:08x} does not match the record's {record.payload_crc32:08x}"
        )
    return offset + size, kept


def _check_in_file(view: memoryview, name: str, offset: int, size: int) -> None:
    if offset + size > len(view):
        raise E.PayloadOutOfBounds(
            f"layer {name}: payload {offset}..{offset + size} extends past the end of the file ({len(view)})"
        )


def _has_presence(record: LayerRecord) -> bool:
    return bool(record.flags & C.LayerFlag.KERNEL_PRESENCE)


def _alpha_bits(record: LayerRecord) -> int:
    """The stored alpha width: v2's field, or 8 in a v1 record (where the field is zero)."""
    return record.alpha_bits or C.ALPHA_BITS


def _region_sizes(record: LayerRecord, kept: int | None) -> tuple[int, int, int, int]:
    return conv_region_sizes(record.out_channels, record.in_channels, record.mask_bits, _alpha_bits(record), kept)


def _present_kernels(view: memoryview, name: str, record: LayerRecord) -> int:
    """Population of a presence bitmap (SPEC 3.5), after checking the payload can hold it.

    The payload already lies inside the file; the bitmap's size follows from the record's channel
    counts, so it is checked against the payload before a byte of it is read. Counting needs no
    array: the bitmap is read as one Python int.
    """
    bitmap_size = packed_size(record.out_channels * record.in_channels, 1)
    if record.payload_size < bitmap_size:
        raise E.PayloadSizeMismatch(
            f"layer {name}: payload_size {record.payload_size} cannot hold the {bitmap_size}-byte presence bitmap"
        )
    start = record.payload_offset
    bitmap = view[start : start + bitmap_size]
    if not padding_bits_zero(bitmap, 1, record.out_channels * record.in_channels):
        raise E.NonZeroPadding(f"layer {name}: padding bits in the last byte of the presence region not zero")
    return int.from_bytes(bitmap, "little").bit_count()


def first_payload_offset(region_end: int) -> int:
    """Where the payload after a region ending at `region_end` starts (SPEC 3, shared with the writer).

    >>> first_payload_offset(208), first_payload_offset(325)
    (208, 328)
    """
    return -(-region_end // C.ALIGNMENT) * C.ALIGNMENT


def _check_padding_bits(view: memoryview, name: str, record: LayerRecord, kept: int | None) -> None:
    """SPEC 3.1: no set bit in the padding of the last byte of the alpha, bias and mask regions."""
    out_ch, in_ch, bits = record.out_channels, record.in_channels, record.mask_bits
    stored = out_ch * in_ch if kept is None else kept
    presence_size, alpha_size, bias_size, mask_size = _region_sizes(record, kept)
    alpha_start = record.payload_offset + presence_size
    bias_start = alpha_start + alpha_size
    mask_start = bias_start + bias_size
    for region, start, size, width, count in (
        ("alpha", alpha_start, alpha_size, _alpha_bits(record), stored),
        ("bias", bias_start, bias_size, C.BIAS_BITS, out_ch),
        ("mask", mask_start, mask_size, bits, stored * C.KERNEL_TAPS),
    ):
        if not padding_bits_zero(view[start : start + size], width, count):
            raise E.NonZeroPadding(
                f"layer {name}: padding bits in the last byte of the {region} region not zero"
            )


def _decode_layer(view: memoryview, name: str, record: LayerRecord, kept: int | None) -> Layer:
    """The arrays of one layer; the stored kernels go to the present places, absent ones are 0."""
    if record.kind == C.LayerKind.MAXPOOL2X2:
        return PoolLayer(name=name, channels=record.in_channels)
    out_ch, in_ch, bits, alpha_bits = record.out_channels, record.in_channels, record.mask_bits, _alpha_bits(record)
    kernels = out_ch * in_ch
    stored = kernels if kept is None else kept
    regions = []
    start = record.payload_offset
    for size in _region_sizes(record, kept):
        regions.append(view[start : start + size])
        start += size
    presence_bytes, alpha_bytes, bias_bytes, mask_bytes = regions
    codes = unpack_uint(alpha_bytes, alpha_bits, stored)
    taps = unpack_uint(mask_bytes, bits, stored * C.KERNEL_TAPS).reshape(stored, C.KERNEL_TAPS)
    present = None
    if kept is not None:
        present = unpack_uint(presence_bytes, 1, kernels).astype(bool)
        codes, taps = _scatter(present, codes), _scatter(present, taps)
        present = present.reshape(out_ch, in_ch)
    return ConvLayer(
        name=name,
        mask_bits=bits,
        weight_shift=record.weight_shift,
        bias_shift=record.bias_shift,
        out_shift=record.out_shift,
        alpha=(codes << (C.ALPHA_BITS - alpha_bits)).astype(np.uint8).reshape(out_ch, in_ch),
        mask=taps.reshape(out_ch, in_ch, C.KERNEL_SIZE, C.KERNEL_SIZE),
        bias=unpack_int12(bias_bytes, out_ch),
        alpha_bits=alpha_bits,
        present=present,
    )


def _scatter(present: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """The stored rows put at the present places, zeros elsewhere (stored row j = j-th present kernel)."""
    full = np.zeros((present.size,) + stored.shape[1:], dtype=stored.dtype)
    full[present] = stored
    return full
