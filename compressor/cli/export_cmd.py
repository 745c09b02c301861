"""`chipq export BLOB --format F -o DIR`: hand-off artefacts for a chip team."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from chipq.cli import app
from chipq.cli.options import flag
from chipq.errors import UsageError
from chipq.export import FORMATS, MANIFEST, export_blob

_HELP = "\n\n".join(
    [
        "Write what a chip team takes into its own flow, from a checked blob (exit 2 if the reader refuses it).",
        "Formats: " + "; ".join(f"{name}: {fmt.help}" for name, fmt in FORMATS.items()) + ".",
        f"DIR is created. An existing DIR must be empty or a previous export (it holds {MANIFEST}); a previous "
        "export is replaced whole, build products and run outputs inside it included. Any other non-empty "
        "folder is refused. The export is written beside DIR and renamed into place: a failed export leaves "
        "DIR as it was.",
        "Example: chipq export vgg16.blob --format c -o c && make -C c && c/chipq_ref vgg16.blob pixels.u8 out",
    ]
)


# The --format choices are the keys of FORMATS: a new format needs no change here.
FormatName = Enum("FormatName", {name: name for name in FORMATS}, type=str)


@app.command("export", help=_HELP, short_help="Hand-off for a chip team: a C reference model, ROM images (hex, coe, C header).")
def export_command(
    blob: Path = typer.Argument(..., metavar="BLOB", help="A chip blob.", show_default=False),
    fmt: FormatName = typer.Option(..., "--format", "-f", help="What to write.", show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="DIR", help="The folder to write (required).", show_default=False),
    old_out: Optional[Path] = typer.Option(None, "--out", metavar="DIR", hidden=True, help="Old name of --output."),
    as_json: bool = flag("--json", help="Print the export manifest as one JSON object."),
) -> None:
    """Export a blob; see `_HELP`."""
    if output is None and old_out is None:
        raise UsageError("missing option --output / -o DIR: the folder to write")
    if output is not None and old_out is not None and output != old_out:
        raise UsageError(f"--output {output} and --out {old_out} (its old name) name different folders: give one")
    out = output or old_out
    fmt = fmt.value
    info = export_blob(blob, fmt, out)
    if as_json:
        print(json.dumps({"out": str(out), **info}, indent=2))
        return
    console = Console(highlight=False)
    files = sorted(p.name for p in out.iterdir())
    console.print(f"[bold]{escape(str(out))}[/]: {fmt} export of {escape(str(blob))} ({len(info['layers'])} layers): {escape(', '.join(files))}")
    if fmt == "c":
        console.print(f"build: make -C {escape(str(out))}; run: {escape(str(out / 'chipq_ref'))} {escape(str(blob))} PIXELS.u8 OUTDIR")
