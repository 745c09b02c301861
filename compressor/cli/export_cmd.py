"""`chipq export BLOB --format FMT -o DIR`: what a chip team takes into its own flow."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any, Callable

import typer
from rich.markup import escape

from ..errors import UsageError
from ..formats.model import ChipModel
from ..formats.reader import from_bytes, load_blob_bytes
from . import app, err_console

_HELP = "\n\n".join(
    [
        "Write what a hardware flow needs from BLOB into DIR (created if missing).",
        "--format hex: one $readmemh file per conv layer and bank, <ll>_<name>.<bank>.hex; --format coe: "
        "the same words as Xilinx .coe files; --format h: one C99 header chipq_rom.h with a const array "
        "per layer and bank. Banks: alpha (8-bit words, address o*I + i), bias (12-bit two's complement, "
        "address o), mask (9*m-bit words, address o*I + i, tap ky*3 + kx at bits t*m .. t*m+m-1). "
        "DIR/memory_map.json lists every file, word width, depth and address, and each layer's shifts. "
        "The words laid end to end LSB first are the blob's payload regions bit for bit (SPEC.md section 7).",
        "The files appear only once all are written. A damaged or hostile blob is refused with a one-line "
        "error and exit code 2.",
        "Example: chipq export vgg16.blob --format hex -o rom",
    ]
)

Writer = Callable[[ChipModel, bytes, Path], dict[str, Any]]


def _memory_images(fmt: str) -> Writer:
    from ..export.memimage import writer

    return writer(fmt)


# One entry per --format; each gives a writer taking (model, blob bytes, DIR) and returning a summary.
WRITERS: dict[str, Callable[[], Writer]] = {fmt: partial(_memory_images, fmt) for fmt in ("hex", "coe", "h")}


@app.command("export", help=_HELP, short_help="Export a blob for a hardware flow: ROM images (hex, coe, C header).")
def export_command(
    blob: Path = typer.Argument(..., metavar="BLOB", help="A chip blob.", show_default=False),
    fmt: str = typer.Option(..., "--format", "-f", metavar="|".join(WRITERS), help="What to write.", show_default=False),
    out_dir: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Folder to write into.", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print the summary (the memory map) as JSON."),
) -> None:
    """Export a blob; see `_HELP`."""
    if fmt not in WRITERS:
        raise UsageError(f"--format {fmt!r}: expected one of {', '.join(WRITERS)}")
    data = load_blob_bytes(blob)
    model = from_bytes(data)  # raises a FormatError (exit 2) on any failed check
    summary = WRITERS[fmt]()(model, data, out_dir)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    convs = [row for row in summary["layers"] if row["kind"] == "conv3x3_relu"]
    err_console.print(
        f"wrote {escape(fmt)} memory images of {len(convs)} conv layers (3 banks each) and "
        f"memory_map.json into {escape(str(out_dir))}",
        highlight=False,
        soft_wrap=True,
    )
