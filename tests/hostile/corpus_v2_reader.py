"""Hostile chip format v2 blobs through `chipq inspect` and `chipq verify` (the Python reader side).

Each case writes `v2.blob`, a lie crafted from a valid v2 blob (narrow alphas, two pruned layers;
the same model as tests/formats/test_reader_hostile_v2.py, whose docstring gives the layout), with
every CRC and file_size recomputed so the v2 check itself fires. A correct chipq refuses it with
one line naming v2.blob and exit 2. Two valid v2 blobs (one whose last conv keeps no kernel) must
be accepted. The C model's v2 cases live in their own block (the hand-off's).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from helpers import REPO, SAMPLE_BLOB

NAME = "v2.blob"
CONV1, POOL1, CONV2, CONV3 = 0, 1, 2, 3
RECORD_V2_FIELDS = (28, 29)  # alpha_bits, flags
CONV2_PRESENCE = (328, 4)  # (offset, bytes) of conv2_1's bitmap in the base v2 blob
CONV3_ALPHA_LAST = 407  # last byte of conv2_2's alpha region (2 padding bits, 0xC0)


def _blobcraft():
    sys.path.insert(0, str(REPO / "tests" / "formats"))
    import blobcraft

    return blobcraft


def v2_base(keep_last: float = 0.6) -> bytes:
    from chipq.formats.synthetic import random_model
    from chipq.formats.writer import to_bytes

    model = random_model(
        [3, 2, 1], [5, "M", 6, 7], input_hw=(8, 8), seed=11, alpha_bits=[5, 8, 3], keep=[None, 0.5, keep_last]
    )
    return to_bytes(model)


def _set_byte(blob: bytes, at: int, value: int) -> bytes:
    return blob[:at] + bytes([value]) + blob[at + 1 :]


def _record_byte(index: int, field: int) -> int:
    return 64 + 48 * index + RECORD_V2_FIELDS[field]


def _flip_bitmap_bit(blob: bytes, to: int) -> bytes:
    start, size = CONV2_PRESENCE
    bitmap = int.from_bytes(blob[start : start + size], "little")
    bit = next(k for k in range(30) if (bitmap >> k) & 1 != to)
    return blob[:start] + (bitmap ^ (1 << bit)).to_bytes(size, "little") + blob[start + size :]


def _v1_as_v2(alpha_bits: int) -> bytes:
    """The sample v1 blob labelled version 2 with `alpha_bits` in its convs' byte 28: 0 is out of range,
    8 uses no v2 feature (SPEC 2: then the blob is version 1, test_reader_hostile_v2.py)."""
    craft = _blobcraft()
    blob = craft.set_header(SAMPLE_BLOB.read_bytes(), version=2)
    for index in (0, 2):  # the sample's conv1_1 and conv2_1
        blob = _set_byte(blob, _record_byte(index, 0), alpha_bits)
    return blob


# what each lie does to the valid v2 blob (before the reseal)
LIES: dict[str, Callable[[], bytes]] = {
    "v2-relabelled-v1": lambda: _blobcraft().set_header(v2_base(), version=1),
    "v1-relabelled-v2": lambda: _v1_as_v2(0),
    "v1-relabelled-v2-alpha8": lambda: _v1_as_v2(8),
    "version-3": lambda: _blobcraft().set_header(v2_base(), version=3),
    "alpha-bits-9": lambda: _set_byte(v2_base(), _record_byte(CONV1, 0), 9),
    "alpha-bits-0": lambda: _set_byte(v2_base(), _record_byte(CONV3, 0), 0),
    "unknown-flag": lambda: _set_byte(v2_base(), _record_byte(CONV2, 1), 0x81),
    "pool-flag": lambda: _set_byte(v2_base(), _record_byte(POOL1, 1), 1),
    "pool-alpha-bits": lambda: _set_byte(v2_base(), _record_byte(POOL1, 0), 8),
    "record-reserved-30": lambda: _set_byte(v2_base(), 64 + 48 * CONV2 + 30, 1),
    "bitmap-one-more": lambda: _flip_bitmap_bit(v2_base(), 1),
    "bitmap-one-fewer": lambda: _flip_bitmap_bit(v2_base(), 0),
    "bitmap-padding": lambda: _set_byte(v2_base(), 331, v2_base()[331] | 0x80),
    "alpha-padding": lambda: _set_byte(v2_base(), CONV3_ALPHA_LAST, v2_base()[CONV3_ALPHA_LAST] | 0x80),
    "flag-cleared": lambda: _set_byte(v2_base(), _record_byte(CONV3, 1), 0),
    "payload-short-for-bitmap": lambda: _blobcraft().set_record(v2_base(), CONV3, payload_size=3)[: 392 + 3],
    "bitmap-claims-4096-outputs": lambda: _blobcraft().set_record(v2_base(), CONV3, out_channels=4096),
}


def _write_lie(lie: Callable[[], bytes]) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        (folder / NAME).write_bytes(_blobcraft().reseal(lie()))

    return setup


def _write_valid(keep_last: float) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        (folder / NAME).write_bytes(v2_base(keep_last))

    return setup


def v2_reader_cases(case_type) -> list:
    """The cases, as `corpus.Case` objects (`case_type`, passed in to keep the import one-way)."""
    commands = {
        "inspect": ["inspect", NAME],
        "inspect-hw": ["inspect", NAME, "--hw", "16@100", "--json"],
        "verify": ["verify", NAME, "--images", "photos", "--limit", "1"],
    }
    cases = []
    for what, lie in LIES.items():
        for label, argv in commands.items():
            command = argv[0]
            if label == "inspect-hw" and what not in ("bitmap-one-more", "bitmap-claims-4096-outputs"):
                continue  # --hw reads the blob the same way: two lies show it
            cases.append(case_type(f"{command}/v2-{what}" + ("-hw" if label == "inspect-hw" else ""), argv,
                                   _write_lie(lie), mention=NAME))  # fmt: skip
    for label, keep_last in (("valid", 0.6), ("valid-empty-layer", 0.0)):
        for command, argv in commands.items():
            cases.append(case_type(f"{argv[0]}/v2-{label}" + ("-hw" if command == "inspect-hw" else ""), argv,
                                   _write_valid(keep_last), expect=(0,)))  # fmt: skip
    return cases
