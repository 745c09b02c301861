"""`inspect`: what a blob holds and what it costs (`chipq.reports.inspect` and `.hwcost` compute the rows)."""

from __future__ import annotations

from pathlib import Path

from chipq.formats.reader import read_blob_bytes
from chipq.reports.hwcost import Hardware, hardware_cost
from chipq.reports.inspect import summarize


def inspect_blob(blob: Path, input_hw: tuple[int, int] | None = None, hw: Hardware | None = None) -> dict:
    """`chipq inspect --json`: the blob read with every check (a FormatError names the file), its
    layers, sizes and ratios, the buffers at `input_hw` and the cost model for `hw` when given."""
    model, data = read_blob_bytes(blob)  # CRCs included
    summary = summarize(model, len(data), crc_ok=True, input_hw=input_hw)
    if hw is not None:
        summary["hw"] = hardware_cost(model, hw, input_hw)
    return {"blob": str(blob), **summary}
