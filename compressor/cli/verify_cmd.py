"""`chipq verify`: integrity, fast == golden, accumulator headroom, fidelity to the float model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chipq.cli import app, err_console
from chipq.cli.options import flag
from chipq.cli.progress import status as progress_status
from chipq.errors import CheckFailed

_HELP = "\n\n".join(
    [
        "Check a chip blob and report. Integrity: every structural check and CRC of the reader, and "
        "the proof that no accumulator can overflow 32 bits. Exactness: the fast executor (what "
        "`extract` uses) equals the golden executor (SPEC.md, one function per op) on every element "
        "of every layer. Headroom: the largest |accumulator| seen per layer. With --model: per conv "
        "layer relative error, SQNR and cosine of the integer maps against the float model, and the "
        "cosine of the NIP descriptors.",
        "Images (default: the 9 sample photos shipped with chipq, samples/photos in a checkout; never the "
        "calibration photos, so the fidelity is measured on photos the blob was not fitted on) are resized "
        "to the blob's input size. The golden executor "
        "is slow (about 15 s per 224x224 VGG-16 image), so it checks the first --golden images; the "
        "fast executor and the float model see all of them.",
        "--vectors DIR writes each layer's integer input and output for the first --golden images "
        "(.npy + manifest.json) for checking an RTL simulation layer by layer; --vectors-hex adds a "
        "$readmemh .hex beside each (uint8 as 2 hex digits, the int16 conv1 input as 4).",
        "Exit code 0 when every check passes, 1 when one fails (the reason is printed), 2 for bad input.",
        "Example: chipq verify vgg16.blob --model vgg16.pt --images samples/photos",
    ]
)


@app.command("verify", help=_HELP, short_help='Check a blob: integrity, fast == golden executor, fidelity.')
def verify_command(
    blob: Path = typer.Argument(..., metavar="BLOB", help="A chip blob.", show_default=False),
    model: Optional[Path] = typer.Option(None, "--model", "-m", metavar="MODEL", help="The float model the blob came from (.pt/.onnx).", show_default=False),
    images: Optional[Path] = typer.Option(None, "--images", metavar="DIR", help="Photos to run (folder or list file). Default: the sample photos shipped with chipq (not calibration photos).", show_default=False),
    limit: int = typer.Option(8, "--limit", min=1, help="Use at most this many images."),
    golden: int = typer.Option(1, "--golden", min=0, help="How many images the golden executor checks."),
    vectors: Optional[Path] = typer.Option(None, "--vectors", metavar="OUT", help="Write per-layer test vectors into this folder.", show_default=False),
    vectors_hex: bool = flag("--vectors-hex", help="With --vectors: also write every vector as a $readmemh .hex file (one element per line, C order)."
    ),
    min_cosine: Optional[float] = typer.Option(
        None, "--min-cosine", help="Fail when the mean NIP descriptor cosine to the float model is below this (needs --model).", show_default=False
    ),
    as_json: bool = flag("--json", help="Print the report as one JSON object."),
) -> None:
    """Verify a blob; see `_HELP`."""
    from chipq.pipeline.verify import verify_blob

    with progress_status("verify", err_console, quiet=as_json) as status:
        _, report = verify_blob(
            blob, model=model, images=images, limit=limit, golden_count=golden, vectors=vectors,
            vectors_hex=vectors_hex, min_cosine=min_cosine, progress=status.update,
        )  # fmt: skip
    data = {"blob": str(blob), "integrity": "ok", **report.as_dict()}
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        _render(data)
    if report.failures:
        raise CheckFailed("; ".join(report.failures))


def _render(data: dict) -> None:
    console = Console(highlight=False)
    console.print(f"[bold]{escape(data['blob'])}[/]: integrity ok (structure, CRCs, 32-bit accumulator bound)")
    stored = data["kept_kernels"] / data["kernels"] if data["kernels"] else 1.0
    console.print(
        f"chip format v{data['format_version']}, {data['kept_kernels']:,} of {data['kernels']:,} kernels stored ({stored:.0%})"
    )
    exact = "[green]equal[/]" if data["exact"] else "[red]DIFFERENT[/]"
    console.print(
        f"fast executor ({escape(data['fast_route'])}) vs golden on {data['golden_images']} image(s), "
        f"every element of every layer: {exact}"
    )
    agreement = {row["name"]: row for row in data["agreement"]}
    table = Table(title="per conv layer")
    for column in ("layer", "max |acc|", "headroom bits", "rel error", "SQNR dB", "cosine"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for name, acc in data["accumulator"].items():
        row = agreement.get(name)
        table.add_row(
            escape(name),
            f"{acc['peak']:,}",
            f"{acc['headroom_bits']:.1f}",
            f"{row['rel_error']:.3f}" if row else "-",
            f"{row['sqnr_db']:.1f}" if row else "-",
            f"{row['cosine']:.4f}" if row else "-",
        )
    console.print(table)
    nip = data["nip_cosine"]
    if nip["mean"] is not None:
        console.print(f"NIP descriptor cosine to the float model over {data['images']} images: mean {nip['mean']:.4f}, min {nip['min']:.4f}")
    console.print("[green]all checks passed[/]" if data["ok"] else "[red]checks failed[/]")
