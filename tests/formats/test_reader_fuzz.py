"""The reader fuzz, kept: a fixed-seed run of a few thousand mutated blobs on every test run.

Property: for any bytes, `from_bytes` returns a model or raises a `FormatError`, nothing else; and
an accepted blob re-serialises (`to_bytes`) to exactly the same bytes: the format has one encoding
per model. Half of the mutants get their CRCs and file_size recomputed (`blobcraft.reseal`), so the
structural checks behind the CRCs are reached. The coverage-guided (atheris) run of the same
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


def mutate(blob: bytes, rng: np.random.Generator) -> bytes:
    """One to six random edits (set, flip, insert, delete, cut, extend), then maybe a reseal."""
    data = bytearray(blob)
    for _ in range(int(rng.integers(1, 7))):
        op = int(rng.integers(0, 6))
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


def bases(sample_blob_bytes: bytes) -> dict[str, bytes]:
    return {
        "tiny.blob": sample_blob_bytes,
        "random 3-conv": to_bytes(random_model([2, 5, 1], [4, "M", 6, 3], input_hw=(8, 12), seed=7)),
    }


@pytest.mark.parametrize("base", ["tiny.blob", "random 3-conv"])
def test_mutants_are_refused_or_reserialise_identically(sample_blob_bytes, base):
    blob = bases(sample_blob_bytes)[base]
    rng = np.random.default_rng([SEED, len(blob)])
    accepted = refused = 0
    for case in range(CASES_PER_BASE):
        data = mutate(blob, rng)
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
