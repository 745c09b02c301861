"""Regenerate `samples/tiny.blob`, the small committed blob that tests and examples use.

    .venv/bin/python samples/make_sample_blob.py

The model is random but fixed (seed 2): conv1_1 3->8 with 3-bit masks, pool1, conv2_1 8->16 with
2-bit masks, for a 32x32 RGB input. The writer is deterministic, so running this again gives the same
bytes; a test checks that the committed file still equals this script's output.
"""

from __future__ import annotations

from pathlib import Path

from chipq.formats.model import ChipModel
from chipq.formats.synthetic import random_model
from chipq.formats.writer import write_blob

SAMPLE_PATH = Path(__file__).resolve().parent / "tiny.blob"


def tiny_model() -> ChipModel:
    """The model stored in `samples/tiny.blob`."""
    return random_model([3, 2], [8, "M", 16], input_hw=(32, 32), seed=2)


if __name__ == "__main__":
    write_blob(tiny_model(), SAMPLE_PATH)
    print(f"wrote {SAMPLE_PATH} ({SAMPLE_PATH.stat().st_size} bytes)")
