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
from chipq.errors import CheckFailed, UsageError

_HELP = "\n\n".join(
    [
        "Check a chip blob and report. Integrity: every structural check and CRC of the reader, and "
        "the proof that no accumulator can overflow 32 bits. Exactness: the fast executor (what "
        "`extract` uses) equals the golden executor (SPEC.md, one function per op) on every element "
        "of every layer. Headroom: the largest |accumulator| seen per layer. With --model: per conv "
        "layer relative error, SQNR and cosine of the integer maps against the float model, and the "
        "cosine of the NIP descriptors.",
        "Images (default: samples/photos) are resized to the blob's input size. The golden executor "
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
    images: Optional[Path] = typer.Option(None, "--images", metavar="DIR", help="Images to run (folder or list file). Default: samples/photos.", show_default=False),
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
    from chipq.executor.memory import check_fits
    from chipq.formats.fileio import check_output_dir
    from chipq.formats.reader import read_blob
    from chipq.quant.compress import calibration_images, default_calib_dir
    from chipq.reports.verify import verify, write_vectors

    if vectors_hex and vectors is None:
        raise UsageError("--vectors-hex needs --vectors")
    if min_cosine is not None and model is None:
        raise UsageError("--min-cosine needs --model")
    if vectors is not None:
        check_output_dir(vectors, "test-vector folder", "--vectors")
    chip = read_blob(blob)  # integrity: raises a FormatError (exit 2) on any failed check
    hw = (chip.input_height, chip.input_width)
    check_fits(chip.layers, hw, 8, str(blob), keep_maps=limit if model is not None else 0)
    stack = None
    if model is not None:
        from chipq.importers import load_model

        stack = load_model(model)
        check_same_chain(chip, stack.without_trailing_pool(), blob, model)
    source = images if images is not None else default_calib_dir()
    batch, names = calibration_images(source, hw, limit=limit)
    with progress_status("verify", err_console, quiet=as_json) as status:
        report = verify(chip, batch, names, stack=stack, golden_count=golden, progress=status.update)
        if vectors is not None:
            status.update("writing test vectors")
            write_vectors(chip, batch[: max(golden, 1)], names[: max(golden, 1)], vectors, readmemh=vectors_hex)
    data = report.as_dict()
    if min_cosine is not None and data["nip_cosine"]["mean"] is not None and data["nip_cosine"]["mean"] < min_cosine:
        report.failures.append(f"mean NIP cosine {data['nip_cosine']['mean']:.4f} < --min-cosine {min_cosine}")
        data = report.as_dict()
    data = {"blob": str(blob), "integrity": "ok", **data}
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        _render(data, chip)
    if report.failures:
        raise CheckFailed("; ".join(report.failures))


def check_same_chain(chip, stack, blob: Path, model: Path) -> None:
    """Refuse a float model whose layers are not the blob's (another model, or another plan's source).

    Raises:
        UsageError: naming both files and the first layer that differs.
    """
    def chain(layers) -> list[tuple[str, int, int]]:
        return [
            ("conv" if hasattr(layer, "weight") or hasattr(layer, "mask") else "pool", layer.in_channels, layer.out_channels)
            if hasattr(layer, "weight") or hasattr(layer, "mask") else ("pool", 0, 0)
            for layer in layers
        ]

    theirs, mine = chain(stack.layers), chain(chip.layers)
    if theirs == mine:
        return
    for index, (a, b) in enumerate(zip(theirs, mine)):
        if a != b:
            raise UsageError(
                f"--model {model}: layer {index} is {a[0]} {a[1]}->{a[2]}, {blob} has {b[0]} {b[1]}->{b[2]}: "
                "the blob was not made from this model"
            )
    raise UsageError(f"--model {model}: {len(theirs)} layers, {blob} has {len(mine)}: the blob was not made from this model")


def _render(data: dict, chip) -> None:
    console = Console(highlight=False)
    console.print(f"[bold]{escape(data['blob'])}[/]: integrity ok (structure, CRCs, 32-bit accumulator bound)")
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
