"""Write a `ChipModel` as a chip format blob, deterministically and only if it is valid.

A model that uses no v2 feature (every layer has 8-bit alpha and no presence bitmap) is written as
v1, byte for byte as before v2 existed; any v2 feature makes the whole blob v2 (SPEC 2).

The writer runs the reader's own checks on the records it is about to write (names, field ranges,
chain rule), checks the arrays' shapes and value ranges, and proves the accumulator bound of
SPEC 4.5 for every conv layer. A model that fails any of them raises a `FormatError` and nothing is
written. The same model always gives the same bytes: payloads are packed at the first aligned offset
after the previous region, padding and reserved bytes are zero, and nothing depends on time or order
of dictionary iteration.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import replace

import numpy as np

from chipq.formats import constants as C
from chipq.formats import errors as E

# accumulator_bound is re-exported: callers that import it from the writer keep working.
from chipq.formats.bounds import accumulator_bound, check_accumulator_bounds  # noqa: F401
from chipq.formats.fileio import FileRefused, atomic_write
from chipq.formats.model import ChipModel, ConvLayer, Layer
from chipq.formats.packing import pack_int12, pack_uint
from chipq.formats.reader import (
    HEADER_CRC_SPAN,
    ChainChecker,
    Header,
    LayerRecord,
    check_fields,
    check_input_fields,
    check_name,
    first_payload_offset,
)

_NO_RESERVED_A = bytes(3)
_NO_RESERVED_B = bytes(2)


def write_blob(model: ChipModel, path: str | os.PathLike) -> None:
    """Write `model` to `path` atomically (`chipq.formats.fileio.atomic_write`).

    Raises:
        FormatError: the model cannot be written (see `to_bytes`); no file is created.
        BlobWriteFailed: the file system refused the write; `path` is left as it was.
    """
    data = to_bytes(model)  # validate before touching the file system
    try:
        atomic_write(path, data, what="blob")
    except FileRefused as exc:
        raise E.BlobWriteFailed(str(exc)) from None


def to_bytes(model: ChipModel) -> bytes:
    """The blob of `model` (SPEC 2 and 3), after checking it.

    Raises:
        FormatError: a subclass naming the layer and field: bad name, duplicate name, field or array
            value out of range, array shape that does not match, broken chain, or AccumulatorOverflow.
    """
    version = model.format_version()
    records = validate(model)
    table_end = C.HEADER_SIZE + len(records) * C.LAYER_RECORD_SIZE
    body = bytearray()  # everything after the table
    final_records = []
    region_end = table_end
    for layer, record in zip(model.layers, records):
        if isinstance(layer, ConvLayer):
            payload = conv_payload(layer)
            offset = first_payload_offset(region_end)
            body += bytes(offset - region_end)
            body += payload
            region_end = offset + len(payload)
            record = replace(
                record, payload_offset=offset, payload_size=len(payload), payload_crc32=zlib.crc32(payload)
            )
        final_records.append(record)
    table = b"".join(record.pack() for record in final_records)
    header = Header(
        magic=C.MAGIC,
        version=version,
        header_size=C.HEADER_SIZE,
        layer_record_size=C.LAYER_RECORD_SIZE,
        alignment=C.ALIGNMENT,
        layer_count=len(final_records),
        flags=0,
        file_size=table_end + len(body),
        input_height=model.input_height,
        input_width=model.input_width,
        input_channels=C.INPUT_CHANNELS,
        channel_order=int(model.channel_order),
        input_mean=tuple(int(v) for v in model.input_mean),
        reserved=bytes(15),
        table_crc32=zlib.crc32(table),
        header_crc32=0,
    )
    head = header.pack()
    head = head[:HEADER_CRC_SPAN] + zlib.crc32(head[:HEADER_CRC_SPAN]).to_bytes(4, "little")
    total = len(head) + len(table) + len(body)
    if total > C.MAX_FILE_SIZE:
        raise E.FileTooLarge(f"the blob would be {total} bytes, over {C.MAX_FILE_SIZE}")
    return head + table + bytes(body)


def validate(model: ChipModel) -> list[LayerRecord]:
    """Check `model` as the reader would check its blob, plus array ranges and SPEC 4.5.

    Returns:
        The layer records without payload offsets, sizes and CRCs.
    """
    check_input_fields(
        model.input_height,
        model.input_width,
        C.INPUT_CHANNELS,
        int(model.channel_order),
        tuple(model.input_mean),
    )
    if not 1 <= len(model.layers) <= C.MAX_LAYERS:
        raise E.BadLayerCount(f"model has {len(model.layers)} layers, not 1..{C.MAX_LAYERS}")
    chain = ChainChecker(C.INPUT_CHANNELS, model.input_height, model.input_width)
    version = model.format_version()
    seen: set[str] = set()
    records = []
    for index, layer in enumerate(model.layers):
        check_name(index, layer.name)
        if layer.name in seen:
            raise E.DuplicateLayerName(f"layer {index}: name {layer.name} already used by an earlier layer")
        seen.add(layer.name)
        if isinstance(layer, ConvLayer):
            _check_shapes(layer)
        record = _record(layer, version)
        check_fields(layer.name, record, version)
        if isinstance(layer, ConvLayer):
            _check_values(layer)
        chain.add(layer.name, record.kind, record.in_channels, record.out_channels)
        records.append(record)
    check_accumulator_bounds(model)
    return records


def conv_payload(layer: ConvLayer) -> bytes:
    """The presence, alpha, bias and mask regions of a conv payload, back to back (SPEC 3.1).

    Kernels are stored o-major (kernel o*I + i); with a presence bitmap only the present ones, in
    that order (SPEC 3.5). With 8-bit alpha and no bitmap this is v1's payload.
    """
    codes = layer.alpha_codes().reshape(-1)
    taps = layer.mask.reshape(-1, C.KERNEL_TAPS)
    presence = b""
    if layer.present is not None:
        keep = layer.present.reshape(-1)
        presence = pack_uint(keep.astype(np.uint8), 1)
        codes, taps = codes[keep], taps[keep]
    alpha = pack_uint(codes, layer.alpha_bits) if layer.alpha_bits != C.ALPHA_BITS else codes.tobytes()
    return presence + alpha + pack_int12(layer.bias) + pack_uint(taps, layer.mask_bits)


def _record(layer: Layer, version: int) -> LayerRecord:
    conv = isinstance(layer, ConvLayer)
    v2_conv = conv and version == C.FORMAT_V2
    flags = int(C.LayerFlag.KERNEL_PRESENCE) if v2_conv and layer.pruned else 0
    return LayerRecord(
        kind=int(layer.kind),
        reserved_a=_NO_RESERVED_A,
        name=layer.name.encode("ascii").ljust(C.NAME_SIZE, b"\0"),
        in_channels=layer.in_channels,
        out_channels=layer.out_channels,
        mask_bits=layer.mask_bits if conv else 0,
        weight_shift=layer.weight_shift if conv else 0,
        bias_shift=layer.bias_shift if conv else 0,
        out_shift=layer.out_shift if conv else 0,
        alpha_bits=layer.alpha_bits if v2_conv else 0,
        flags=flags,
        reserved_b=_NO_RESERVED_B,
        payload_offset=0,
        payload_size=0,
        payload_crc32=0,
    )


def _arrays(layer: ConvLayer) -> dict[str, np.ndarray]:
    return {"alpha": layer.alpha, "mask": layer.mask, "bias": layer.bias}


def _check_shapes(layer: ConvLayer) -> None:
    """Integer arrays whose shapes follow from alpha's (out, in)."""
    name = layer.name
    arrays = _arrays(layer)
    for field, array in arrays.items():
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "iu":
            kind = getattr(array, "dtype", type(array).__name__)
            raise E.FieldOutOfRange(f"layer {name}: {field} must be an integer numpy array, got {kind}")
    if layer.alpha.ndim != 2:
        raise E.ShapeMismatch(f"layer {name}: alpha has shape {layer.alpha.shape}, expected (out, in)")
    out_ch, in_ch = layer.alpha.shape
    expected = {"mask": (out_ch, in_ch, C.KERNEL_SIZE, C.KERNEL_SIZE), "bias": (out_ch,)}
    for field, shape in expected.items():
        if arrays[field].shape != shape:
            raise E.ShapeMismatch(f"layer {name}: {field} has shape {arrays[field].shape}, expected {shape}")
    present = layer.present
    if present is not None:
        if not isinstance(present, np.ndarray) or present.dtype != np.bool_:
            kind = getattr(present, "dtype", type(present).__name__)
            raise E.FieldOutOfRange(f"layer {name}: present must be a bool numpy array, got {kind}")
        if present.shape != (out_ch, in_ch):
            raise E.ShapeMismatch(f"layer {name}: present has shape {present.shape}, expected {(out_ch, in_ch)}")


def _check_values(layer: ConvLayer) -> None:
    """Every element lies in its field's range (mask_bits already checked)."""
    arrays = _arrays(layer)
    if not C.MIN_ALPHA_BITS <= layer.alpha_bits <= C.ALPHA_BITS:
        raise E.FieldOutOfRange(f"layer {layer.name}: alpha_bits {layer.alpha_bits} not in {C.MIN_ALPHA_BITS}..{C.ALPHA_BITS}")
    limits = {
        "alpha": (0, C.ALPHA_MAX),
        "mask": (0, (1 << layer.mask_bits) - 1),
        "bias": (C.BIAS_MIN, C.BIAS_MAX),
    }
    for field, (low, high) in limits.items():
        array = arrays[field]
        if array.size and (int(array.min()) < low or int(array.max()) > high):
            seen = f"{int(array.min())}..{int(array.max())}"
            raise E.FieldOutOfRange(f"layer {layer.name}: {field} values {seen} not in {low}..{high}")
    step = C.alpha_step(layer.alpha_bits)
    if step > 1 and np.any(layer.alpha % step):
        raise E.FieldOutOfRange(
            f"layer {layer.name}: alpha values must be multiples of {step} at {layer.alpha_bits}-bit alpha (SPEC 3.4)"
        )
    if layer.present is not None:
        absent = ~layer.present
        if np.any(layer.alpha[absent]) or np.any(layer.mask[absent]):
            raise E.FieldOutOfRange(f"layer {layer.name}: an absent kernel has a nonzero alpha or mask (SPEC 3.5)")
