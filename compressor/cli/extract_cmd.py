"""`chipq extract`: NIP / RNIP descriptors of images, from the chip model or the float model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from chipq.cli import app, err_console
from chipq.cli.options import parse_size
from chipq.errors import UsageError
from chipq.formats import constants as C
from chipq.retrieval.rois import rnip_levels

_HELP = "\n\n".join(
    [
        "Compute a retrieval descriptor for every image (JPEG/PNG; a folder searched recursively, or a "
        "text file listing one path per line) and write them to one .npz file.",
        "--blob runs the compressed model in chipq's integer executor (what the chip computes); "
        "--model runs a float model through the same pipeline, for comparison. Give exactly one.",
        "NIP (default): the image is resized to the chip input, turned 0/90/180/270 degrees, the last "
        "conv maps are pooled over R-MAC regions (square-root pooling), averaged, max-pooled over the "
        "rotations and L2-normalised: 512-D. --rnip 5/9/14 instead cuts R-MAC regions from the input "
        "image (5 and 9: levels 1-2 plus the whole image; 14: levels 1-3), resizes each to the chip "
        "input and pools those maps the same way — how a 224x224 buffer serves a 640x480 photo.",
        "--descriptor float (2 KB), byte (512 bytes) or bit (512 bits). Images that cannot be decoded "
        "are skipped with a warning and counted. An interrupted run resumes from OUT.partial.npz and "
        "gives the same file as an uninterrupted one.",
        "Example: chipq extract samples --blob vgg16.blob --rnip 9 -o desc.npz",
    ]
)


@app.command("extract", help=_HELP, short_help='NIP / RNIP descriptors of images (chip or float model).')
def extract_command(
    images: Path = typer.Argument(..., metavar="IMAGES", help="A folder of images (recursive) or a list file.", show_default=False),
    blob: Optional[Path] = typer.Option(None, "--blob", "-b", metavar="BLOB", help="A chip blob from `chipq compress`.", show_default=False),
    model: Optional[Path] = typer.Option(None, "--model", "-m", metavar="MODEL", help="A float model (.pt/.onnx) instead of a blob.", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", metavar="OUT", help="The descriptor file to write (.npz).", show_default=False),
    rnip: Optional[int] = typer.Option(None, "--rnip", metavar="N", help="Use RNIP with N input crops: 5, 9 or 14.", show_default=False),
    descriptor: str = typer.Option("float", "--descriptor", "-d", help="Descriptor kind: float, byte or bit."),
    size: Optional[str] = typer.Option(
        None, "--size", metavar="WxH", help="Network input size (default: the blob's input buffer, 224x224 for --model).", show_default=False
    ),
    batch: int = typer.Option(8, "--batch", min=1, help="Network inputs per executor call."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as one JSON object."),
) -> None:
    """Extract descriptors; see `_HELP`."""
    from chipq.images import image_names, list_images
    from chipq.retrieval.describe import describe_all, run_metadata
    from chipq.retrieval.descriptors import DescriptorKind, DescriptorStore

    if (blob is None) == (model is None):
        raise UsageError("give exactly one of --blob BLOB or --model MODEL")
    if rnip is not None:
        rnip_levels(rnip)  # refuses anything but 5, 9, 14
    try:
        kind = DescriptorKind[descriptor.upper()]
    except KeyError:
        raise UsageError(f"--descriptor {descriptor!r}: choose float, byte or bit") from None
    features, source, default_size = _features(blob, model, batch)
    input_hw = parse_size(size, "--size") if size else default_size
    paths = list_images(images)
    names = image_names(paths, images)
    store = DescriptorStore(
        output, names, kind=kind, metadata=run_metadata(model=source, rnip=rnip, size=input_hw)
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=as_json) as progress:
        task = progress.add_task("extracting", total=len(names), completed=store.resumed)
        summary = describe_all(
            list(zip(names, paths)), features, store, size=input_hw, rnip=rnip, batch_size=batch,
            on_image=lambda name: progress.advance(task),
        )
    store.finish()
    for name, reason in summary.skipped:
        err_console.print(f"warning: skipped {escape(name)}: {escape(reason)}", highlight=False, soft_wrap=True)
    result = {
        "output": str(output),
        "images": len(names),
        "described": summary.described,
        "resumed": summary.resumed,
        "skipped": len(summary.skipped),
        "descriptor": kind.name.lower(),
        "rnip": rnip,
        "size": list(input_hw),
        "source": source,
    }
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        Console(highlight=False).print(
            f"{summary.described + summary.resumed} descriptors ({kind.name.lower()}) → {escape(str(output))}"
            f"  [{summary.resumed} resumed, {len(summary.skipped)} skipped]"
        )


def _features(blob: Path | None, model: Path | None, batch: int):
    from chipq.retrieval.features import chip_features, float_features

    if blob is not None:
        from chipq.formats.reader import read_blob

        chip = read_blob(blob)
        return chip_features(chip, batch), f"blob:{blob.name}", (chip.input_height, chip.input_width)
    from chipq.importers import load_model

    return float_features(load_model(model), batch), f"model:{model.name}", C.CHIP_INPUT_HW
