"""The C reader against hostile chip format v2 blobs, under AddressSanitizer and UBSan.

Each case takes a valid v2 blob, makes one v2 field or region lie, reseals the CRCs (so the check under
test is the one reached) and says what it lies about. The Python reader must refuse it with the named
error, and `chipq_ref --check` with the same error type (SPEC 5 order) and no sanitizer report. Then
seeded random mutations of v2 blobs (`mutations.mutate`, which also rewrites record bytes 28..31)
must be judged alike by both readers, and those both accept must run equal to golden.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cmodel_run import SANITIZER_ENV, assert_equal_to_golden, python_verdict, read_outputs, run_c
from mutations import mutate

from chipq.formats import constants as C
from chipq.formats import errors as E
from chipq.formats.reader import from_bytes
from chipq.formats.synthetic import random_model
from chipq.formats.writer import to_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "formats"))
from blobcraft import record, reseal, set_header  # noqa: E402

RECORD_AT = 64  # the layer table's offset; record l starts at 64 + 48*l (SPEC 3)
ALPHA_BITS_BYTE, FLAGS_BYTE = 28, 29  # v2 record fields (SPEC 3); reserved in v1
MUTATIONS = 800


def v2_blob() -> bytes:
    """conv1_1 3->5 (3-bit masks, 5-bit alpha, 15 kernels: a 2-byte bitmap with 1 padding bit), pool1,
    conv2_1 5->7 (2-bit masks, 3-bit alpha, 35 kernels: 5 padding bits), on a 9x11 input."""
    model = random_model([3, 2], [5, "M", 7], (9, 11), seed=21, alpha_bits=[5, 3], keep=[0.5, 0.6])
    return to_bytes(model)


def v1_blob() -> bytes:
    return to_bytes(random_model([2, 1], [4, "M", 3], (6, 6), seed=5))


def set_record_byte(blob: bytes, layer: int, offset: int, value: int) -> bytes:
    data = bytearray(blob)
    data[RECORD_AT + 48 * layer + offset] = value
    return bytes(data)


def set_payload_bit(blob: bytes, layer: int, byte: int, bit: int, value: int) -> bytes:
    """Payload byte `byte` of layer `layer` with bit `bit` set to `value`."""
    data = bytearray(blob)
    at = record(blob, layer)["payload_offset"] + byte
    data[at] = (data[at] & ~(1 << bit)) | (value << bit)
    return bytes(data)


def regions(blob: bytes, layer: int) -> dict[str, tuple[int, int]]:
    """(start, size) of the presence, alpha, bias and mask regions inside the payload of `layer`."""
    conv = from_bytes(blob).layers[layer]
    sizes = conv.region_sizes()
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return {name: (int(start), int(size)) for name, start, size in zip(("presence", "alpha", "bias", "mask"), starts, sizes)}


def first_kernel(blob: bytes, layer: int, present: bool) -> int:
    conv = from_bytes(blob).layers[layer]
    return int(np.flatnonzero(conv.present.reshape(-1) == present)[0])


def cases() -> list[tuple[str, bytes, type[E.FormatError] | None]]:
    """(what the blob lies about, the blob, the error both readers must raise; None = accepted)."""
    good = v2_blob()
    conv1, conv2 = 0, 2
    out = [("a valid v2 blob", good, None)]
    # The bitmap claims one more present kernel than the payload stores (and one fewer).
    absent = first_kernel(good, conv2, False)
    out.append(("bitmap population above the payload", reseal(set_payload_bit(good, conv2, absent // 8, absent % 8, 1)), E.PayloadSizeMismatch))
    present = first_kernel(good, conv1, True)
    out.append(("bitmap population below the payload", reseal(set_payload_bit(good, conv1, present // 8, present % 8, 0)), E.PayloadSizeMismatch))
    # A set padding bit after the 15 kernel bits of conv1_1 (bit 7 of byte 1) and the 35 of conv2_1.
    out.append(("bitmap padding bit set (conv1_1)", reseal(set_payload_bit(good, conv1, 1, 7, 1)), E.NonZeroPadding))
    out.append(("bitmap padding bit set (conv2_1)", reseal(set_payload_bit(good, conv2, 4, 7, 1)), E.NonZeroPadding))
    # A set padding bit after the last alpha code (kept * alpha_bits is not a multiple of 8 here).
    for layer in (conv1, conv2):
        start, size = regions(good, layer)["alpha"]
        out.append((f"alpha padding bit set (layer {layer})", reseal(set_payload_bit(good, layer, start + size - 1, 7, 1)), E.NonZeroPadding))
    # Flags: an unknown bit; the presence flag cleared (the payload then has the wrong size).
    out.append(("flags 2 (unknown)", reseal(set_record_byte(good, conv1, FLAGS_BYTE, 2)), E.FieldOutOfRange))
    out.append(("flags 0x81 (unknown high bit)", reseal(set_record_byte(good, conv2, FLAGS_BYTE, 0x81)), E.FieldOutOfRange))
    out.append(("presence flag cleared", reseal(set_record_byte(good, conv2, FLAGS_BYTE, 0)), E.PayloadSizeMismatch))
    # alpha_bits outside 1..8, and a width that changes the payload size.
    out.append(("alpha_bits 0", reseal(set_record_byte(good, conv1, ALPHA_BITS_BYTE, 0)), E.FieldOutOfRange))
    out.append(("alpha_bits 9", reseal(set_record_byte(good, conv2, ALPHA_BITS_BYTE, 9)), E.FieldOutOfRange))
    out.append(("alpha_bits 255", reseal(set_record_byte(good, conv2, ALPHA_BITS_BYTE, 255)), E.FieldOutOfRange))
    out.append(("alpha_bits 8 for 3-bit codes", reseal(set_record_byte(good, conv2, ALPHA_BITS_BYTE, 8)), E.PayloadSizeMismatch))
    # A pool carries v2 fields.
    out.append(("pool with alpha_bits 1", reseal(set_record_byte(good, 1, ALPHA_BITS_BYTE, 1)), E.FieldOutOfRange))
    out.append(("pool with flags 1", reseal(set_record_byte(good, 1, FLAGS_BYTE, 1)), E.FieldOutOfRange))
    # The v2 blob claims version 1: bytes 28/29 are reserved there.
    out.append(("v2 layers in a version-1 blob", reseal(set_header(good, version=C.FORMAT_V1)), E.NonZeroReserved))
    out.append(("version 3", reseal(set_header(good, version=3)), E.UnsupportedVersion))
    # v1 blobs: a nonzero byte 28 or 29 is a reserved byte; the same blob as version 2 is valid
    # (alpha_bits 0 is then out of range), and with alpha_bits 8 it uses no v2 feature: SPEC 2 makes
    # it version 1, so as version 2 it is a second encoding of the model and refused.
    v1 = v1_blob()
    out.append(("v1 record with byte 28 = 8", reseal(set_record_byte(v1, 0, ALPHA_BITS_BYTE, 8)), E.NonZeroReserved))
    out.append(("v1 record with byte 29 = 1", reseal(set_record_byte(v1, 2, FLAGS_BYTE, 1)), E.NonZeroReserved))
    out.append(("v1 payloads under version 2, alpha_bits 0", reseal(set_header(v1, version=C.FORMAT_V2)), E.FieldOutOfRange))
    as_v2 = set_header(v1, version=C.FORMAT_V2)
    as_v2 = set_record_byte(set_record_byte(as_v2, 0, ALPHA_BITS_BYTE, 8), 2, ALPHA_BITS_BYTE, 8)
    out.append(("v1 payloads under version 2, alpha_bits 8", reseal(as_v2), E.BadHeaderField))
    # The payload is too short to hold the bitmap, or runs past the file before the bitmap is read.
    tiny = set_record_byte(set_record_byte(good, conv1, 40, 1), conv1, 41, 0)  # payload_size 1 < 2-byte bitmap
    tiny = set_record_byte(set_record_byte(tiny, conv1, 42, 0), conv1, 43, 0)
    out.append(("payload smaller than its bitmap", reseal(tiny), E.PayloadSizeMismatch))
    huge = set_record_byte(good, conv2, 43, 0x7F)  # payload_size ~2^31: past the end of the file
    out.append(("payload_size past the file with the presence flag", reseal(huge), E.PayloadOutOfBounds))
    return out


def c_check(binary: Path, path: Path) -> str:
    done = subprocess.run([str(binary), "--check", str(path)], capture_output=True, text=True, timeout=120, env=dict(os.environ, **SANITIZER_ENV))
    assert done.returncode in (0, 2), (path.name, done.returncode, done.stderr[-3000:])
    if done.returncode == 0:
        assert done.stderr == "" and "ok" in done.stdout, done.stdout + done.stderr
        return "ok"
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("chipq_ref: "), done.stderr
    return lines[0].split(": ")[1]


CASES = cases()


@pytest.mark.parametrize("what, blob, error", CASES, ids=[case[0] for case in CASES])
def test_a_v2_lie_is_refused_by_python_and_c_alike(chipq_ref_asan, tmp_path, what, blob, error):
    want = error.__name__ if error else "ok"
    assert python_verdict(blob) == want, what
    path = tmp_path / "case.blob"
    path.write_bytes(blob)
    assert c_check(chipq_ref_asan, path) == want, what
    if error is None:  # accepted: it also runs, equal to golden
        model = from_bytes(blob)
        image = np.random.default_rng(0).integers(0, 256, (3, model.input_height, model.input_width), dtype=np.uint8)
        image.tofile(tmp_path / "px.u8")
        done = run_c(chipq_ref_asan, path, tmp_path / "px.u8", tmp_path / "out", dict(os.environ, **SANITIZER_ENV))
        assert done.returncode == 0 and done.stderr == "", done.stderr
        assert_equal_to_golden(model, image, read_outputs(model, tmp_path / "out"), what)


def test_random_mutations_of_v2_blobs_are_judged_like_python(chipq_ref_asan, tmp_path):
    rng = random.Random(23)
    bases = [v2_blob(), to_bytes(random_model([1, 4], [6, "M", 4], (7, 10), seed=2, alpha_bits=[1, 7], keep=[0.2, None]))]
    folder = tmp_path / "blobs"
    folder.mkdir()
    paths, expected = [], {}
    for index in range(MUTATIONS):
        data = mutate(rng.choice(bases), rng)
        path = folder / f"{index:04d}.blob"
        path.write_bytes(data)
        paths.append(path)
        expected[path] = python_verdict(data)
    done = subprocess.run([str(chipq_ref_asan), "--check", *map(str, paths)], capture_output=True, text=True, timeout=600, env=dict(os.environ, **SANITIZER_ENV))
    assert done.returncode in (0, 2) and done.stderr == "", done.stderr[-4000:]
    got = {}
    for path, line in zip(paths, done.stdout.splitlines()):
        assert line.startswith(f"{path}: "), line
        got[path] = line[len(f"{path}: ") :].split(":")[0].split(",")[0]
    wrong = [(p.name, expected[p], got.get(p)) for p in paths if got.get(p) != expected[p]]
    assert not wrong, f"{len(wrong)} of {len(paths)} blobs judged differently (blob, python, C): {wrong[:10]}"
    accepted = [p for p in paths if expected[p] == "ok"]
    kinds = sorted(set(expected.values()))
    assert len(accepted) >= 50 and len(kinds) >= 15 and {"NonZeroPadding", "PayloadSizeMismatch", "FieldOutOfRange"} <= set(kinds), kinds
    print(f"{len(paths)} mutated v2 blobs: {len(accepted)} accepted, refusals {kinds}")
    images = np.random.default_rng(4)
    (tmp_path / "out").mkdir()
    for path in accepted[:60]:
        model = from_bytes(path.read_bytes())
        image = images.integers(0, 256, (3, model.input_height, model.input_width), dtype=np.uint8)
        image.tofile(tmp_path / "px.u8")
        out = tmp_path / "out" / path.stem
        done = run_c(chipq_ref_asan, path, tmp_path / "px.u8", out, dict(os.environ, **SANITIZER_ENV))
        assert done.returncode == 0 and done.stderr == "", (path.name, done.stderr[-3000:])
        assert_equal_to_golden(model, image, read_outputs(model, out), path.name)
