"""The reader fuzz, kept: a fixed-seed run of a few thousand mutated blobs on every test run.

Property: for any bytes, `from_bytes` returns a model or raises a `FormatError`, nothing else; and
an accepted blob re-serialises (`to_bytes`) to exactly the same bytes: the format has one encoding
per model. Half of the mutants get their CRCs and file_size recomputed (`blobcraft.reseal`), so the
structural checks behind the CRCs are reached. Chip format v2 bases (narrow alphas, presence bitmaps,
a layer with no kernel) get a seventh edit too: the version, or a record's alpha_bits or flags byte,
set to a nearby value, so the v2 field checks and the bitmap/size rules are reached often. The coverage-guided (atheris) run of the same
property is tests/fuzz/fuzz_reader.py; its figures are in tests/fuzz/README.md.
"""

from __future__ import annotations

import numpy as np
import pytest
from blobcraft import reseal

from chipq.formats import errors as E
from chipq.formats.reader import from_bytes
from chipq.formats.synthetic import random_model
from chipq.formats.writer import to_bytes

SEED = 20261201
CASES_PER_BASE = 1500
VERSION_AT = 8  # header bytes 8..9
V2_FIELDS_AT = (28, 29)  # alpha_bits and flags in a 48-byte layer record at 64 + 48 * index


def mutate(blob: bytes, rng: np.random.Generator, v2: bool = False) -> bytes:
    """One to six random edits (set, flip, insert, delete, cut, extend; with `v2` also a v2 field
    edit), then maybe a reseal."""
    data = bytearray(blob)
    for _ in range(int(rng.integers(1, 7))):
        op = int(rng.integers(0, 7 if v2 else 6))
        if op == 6:
            _edit_v2_field(data, rng)
            continue
        at = int(rng.integers(0, max(1, len(data))))
        if op == 0 and data:
            data[at] = int(rng.integers(0, 256))
        elif op == 1 and data:
            data[at] ^= 1 << int(rng.integers(0, 8))
        elif op == 2:
            data[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
        elif op == 3 and data:
            del data[at : at + int(rng.integers(1, 9))]
        elif op == 4:
            del data[at:]
        else:
            data += bytes(rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8))
    data = bytes(data)
    if rng.integers(0, 2) and len(data) >= 64:
        try:
            data = reseal(data)
        except Exception:  # the harness's own unpacking of a hopeless table; keep the raw mutant
            pass
    return data


def _edit_v2_field(data: bytearray, rng: np.random.Generator) -> None:
    """The version (1..3), or the alpha_bits (0..9) or flags (0..3) byte of a record, rewritten."""
    records = max(0, min(int.from_bytes(data[20:24], "little"), (len(data) - 64) // 48)) if len(data) >= 64 else 0
    if records == 0 or rng.integers(0, 4) == 0:
        if len(data) > VERSION_AT + 1:
            data[VERSION_AT : VERSION_AT + 2] = int(rng.integers(1, 4)).to_bytes(2, "little")
        return
    which = int(rng.integers(0, 2))
    at = 64 + 48 * int(rng.integers(0, records)) + V2_FIELDS_AT[which]
    data[at] = int(rng.integers(0, 10 if which == 0 else 4))


def bases(sample_blob_bytes: bytes) -> dict[str, bytes]:
    return {
        "tiny.blob": sample_blob_bytes,
        "random 3-conv": to_bytes(random_model([2, 5, 1], [4, "M", 6, 3], input_hw=(8, 12), seed=7)),
        "v2 3-conv": to_bytes(
            random_model([3, 2, 1], [5, "M", 6, 7], input_hw=(8, 8), seed=11, alpha_bits=[5, 8, 3], keep=[None, 0.5, 0.6])
        ),
        "v2 1-bit alpha, empty layer": to_bytes(
            random_model([1, 4, 2], [6, 5, "M", 4], input_hw=(6, 6), seed=3, alpha_bits=[1, 7, 8], keep=[0.3, 0.0, 1.0])
        ),
    }


@pytest.mark.parametrize("base", ["tiny.blob", "random 3-conv", "v2 3-conv", "v2 1-bit alpha, empty layer"])
def test_mutants_are_refused_or_reserialise_identically(sample_blob_bytes, base):
    blob = bases(sample_blob_bytes)[base]
    rng = np.random.default_rng([SEED, len(blob)])
    accepted = refused = 0
    for case in range(CASES_PER_BASE):
        data = mutate(blob, rng, v2=base.startswith("v2"))
        try:
            model = from_bytes(data)
        except E.FormatError as exc:
            assert "\n" not in str(exc)
            refused += 1
            continue
        assert to_bytes(model) == data, f"mutant {case} of {base} accepted but re-serialises differently"
        accepted += 1
    # The run must reach both outcomes, or it tests nothing: a reseal of an unchanged payload
    # byte region (a 0 -> 0 set, a cut then extend that restores) is accepted.
    assert accepted > 0 and refused > CASES_PER_BASE // 2 and accepted + refused == CASES_PER_BASE
