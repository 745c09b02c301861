"""Seeded random mutations of valid blobs, resealed (CRCs and file_size recomputed) most of the time so
that the structural and arithmetic checks behind the CRCs are the ones reached."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "formats"))
from blobcraft import HEADER_FIELDS, RECORD_FIELDS, header, record, reseal, set_header, set_record  # noqa: E402

_LIMITS = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF, "Q": 0xFFFFFFFFFFFFFFFF}
_INTERESTING = {
    "B": [0, 1, 2, 3, 4, 5, 6, 7, 15, 16, 30, 31, 32, 127, 128, 254, 255],
    "H": [0, 1, 2, 3, 8, 4095, 4096, 4097, 32768, 65535],
    "I": [0, 1, 2, 63, 64, 65, 1 << 31, (1 << 32) - 1],
    "Q": [0, 8, 64, 200, 208, 1 << 31, (1 << 31) + 8, 1 << 63, (1 << 64) - 8],
}


def _value(rng: random.Random, fmt: str, old):
    if fmt.endswith("s"):  # a byte string field: one non-zero byte, random bytes, or a name
        size = len(old)
        choice = rng.randrange(4)
        if choice == 0:
            raw = bytearray(size)
            raw[rng.randrange(size)] = rng.randrange(1, 256)
            return bytes(raw)
        if choice == 1:
            return bytes(rng.randrange(256) for _ in range(size))
        if choice == 2 and size == 16:  # another plausible name, maybe with a bad character
            text = "".join(rng.choice("abc_.-9 /\x1b\xe9") for _ in range(rng.randrange(0, 17)))
            return text.encode("latin-1")[:16].ljust(16, b"\0")
        return bytes(size)
    limit = _LIMITS[fmt]
    choice = rng.randrange(4)
    if choice == 0:
        return rng.choice(_INTERESTING[fmt])
    if choice == 1:
        return (old + rng.choice([-1, 1, -8, 8])) % (limit + 1)
    if choice == 2:
        return (old * 2) % (limit + 1)
    return rng.randrange(limit + 1)


def _payload_spans(blob: bytes) -> list[tuple[int, int]]:
    count = header(blob)["layer_count"]
    spans = []
    for index in range(count):
        rec = record(blob, index)
        if rec["kind"] == 1 and rec["payload_size"]:
            spans.append((rec["payload_offset"], rec["payload_offset"] + rec["payload_size"]))
    return spans


def mutate(blob: bytes, rng: random.Random) -> bytes:
    """One random mutation of a valid blob."""
    kind = rng.choice(["bytes", "header", "record", "record", "payload", "payload", "alphas", "cut", "swap"])
    count = header(blob)["layer_count"]
    reseal_it = rng.random() < 0.9
    data = bytearray(blob)
    if kind == "bytes":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        out = bytes(data)
    elif kind == "header":
        name, fmt = rng.choice([f for f in HEADER_FIELDS if f[0] not in ("table_crc32", "header_crc32")])
        out = set_header(blob, **{name: _value(rng, fmt, header(blob)[name])})
    elif kind == "record":
        index = rng.randrange(count)
        out = blob
        for _ in range(rng.choice([1, 1, 2])):
            name, fmt = rng.choice([f for f in RECORD_FIELDS if f[0] != "payload_crc32"])
            out = set_record(out, index, **{name: _value(rng, fmt, record(out, index)[name])})
    elif kind == "payload":  # alpha, bias and mask values: mostly still valid, run and compared
        start, end = rng.choice(_payload_spans(blob))
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(start, end)] = rng.randrange(256)
        out = bytes(data)
    elif kind == "alphas":  # large alphas and biases, often over the SPEC 4.5 bound
        start, end = rng.choice(_payload_spans(blob))
        for position in range(start, end):
            if rng.random() < 0.5:
                data[position] = 0xFF
        out = bytes(data)
        index = rng.choice([i for i in range(count) if record(out, i)["kind"] == 1])
        out = set_record(out, index, bias_shift=rng.randrange(32), out_shift=rng.randrange(32))
    elif kind == "cut":
        out = bytes(data[: rng.randrange(len(data) + 1)]) + bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
    else:  # two records swapped
        if count < 2:
            return mutate(blob, rng)
        a, b = rng.sample(range(count), 2)
        ra, rb = (bytes(blob[64 + 48 * i : 112 + 48 * i]) for i in (a, b))
        data[64 + 48 * a : 112 + 48 * a], data[64 + 48 * b : 112 + 48 * b] = rb, ra
        out = bytes(data)
    if reseal_it and len(out) >= 64:
        out = reseal(out)
    return out
