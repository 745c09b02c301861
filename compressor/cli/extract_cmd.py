"""`chipq extract`: NIP / RNIP descriptors of images, from the chip model or the float model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..errors import UsageError
from ..rois import rnip_levels
from . import app, err_console
from .inspect_cmd import parse_size

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
        "--workers N runs on Ray (pip install 'chipq[ray]'): a local cluster of N workers, or an existing "
        "cluster with --ray-address; each worker loads the model once and reads and decodes its images "
        "itself. Work goes to shards in OUT.shards/ with a manifest; a killed run resumes shard by shard "
        "(only with the same model, images and settings), and the result equals a single-process run's.",
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
    workers: Optional[int] = typer.Option(None, "--workers", min=1, metavar="N", help="Run on Ray with N workers.", show_default=False),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="ADDR", help="An existing Ray cluster (with --workers).", show_default=False),
    shard_size: int = typer.Option(64, "--shard-size", min=1, metavar="N", help="Images per shard (with --workers)."),
) -> None:
    """Extract descriptors; see `_HELP`."""
    from ..descriptors import DescriptorKind, DescriptorStore
    from ..describe import describe_all, run_metadata
    from ..images import image_names, list_images

    if (blob is None) == (model is None):
        raise UsageError("give exactly one of --blob BLOB or --model MODEL")
    if rnip is not None:
        rnip_levels(rnip)  # refuses anything but 5, 9, 14
    try:
        kind = DescriptorKind[descriptor.upper()]
    except KeyError:
        raise UsageError(f"--descriptor {descriptor!r}: choose float, byte or bit") from None
    if ray_address is not None and workers is None:
        raise UsageError("--ray-address needs --workers N")
    if workers is not None:
        from ..retrieval.distributed import require_ray

        require_ray()  # before any work: one line saying how to install it
        return _extract_on_ray(images, blob, model, output, rnip, kind, size, batch, as_json, workers, ray_address, shard_size)
    features, source, default_size = _features(blob, model, batch)
    input_hw = parse_size(size) if size else default_size
    paths = list_images(images)
    names = image_names(paths, images)
    store = DescriptorStore(
        output, names, kind=kind,
        metadata=run_metadata(model=source, rnip=rnip, size=input_hw, source_sha256=_sha256(blob or model)),
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
    from ..features import chip_features, float_features

    if blob is not None:
        from ..formats.reader import read_blob

        chip = read_blob(blob)
        return chip_features(chip, batch), f"blob:{blob.name}", (chip.input_height, chip.input_width)
    from ..importers import load_model

    return float_features(load_model(model), batch), f"model:{model.name}", (224, 224)


def _sha256(path: Path) -> str:
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc})") from exc


def _extract_on_ray(images, blob, model, output, rnip, kind, size, batch, as_json, workers, ray_address, shard_size):
    """`chipq extract --workers N`: the same file on Ray (`chipq.retrieval.distributed`)."""
    from ..describe import run_metadata
    from ..images import image_names, list_images
    from ..retrieval.distributed import Source, plan_distributed, run_distributed

    source = Source.from_file("blob" if blob is not None else "model", blob if blob is not None else model)
    if blob is not None:
        from ..formats.reader import read_blob

        chip = read_blob(blob)  # refuse a bad blob here, before a cluster starts
        default_size = (chip.input_height, chip.input_width)
    else:
        default_size = (224, 224)
    input_hw = parse_size(size) if size else default_size
    paths = list_images(images)
    names = image_names(paths, images)
    label = f"{source.kind}:{source.name}"
    metadata = run_metadata(model=label, rnip=rnip, size=input_hw, source_sha256=source.sha256)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    plan = plan_distributed(  # refuses another run's shards before anything starts
        list(zip(names, paths)), output, source, kind=kind, rnip=rnip, size=input_hw, batch=batch,
        metadata=metadata, shard_size=shard_size,
    )
    already = sum(len(plan.slices[i]) for i in plan.done)
    with Progress(*columns, console=err_console, transient=as_json) as progress:
        task = progress.add_task(f"extracting on Ray ({workers} workers)", total=len(names), completed=already)
        summary = run_distributed(
            plan, workers=workers, ray_address=ray_address, on_shard=lambda count, _done: progress.advance(task, count)
        )
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
        "source": label,
        "workers": workers,
        "shards": summary.shards,
        "shards_resumed": summary.shards_resumed,
    }
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        Console(highlight=False).print(
            f"{summary.described + summary.resumed} descriptors ({kind.name.lower()}) → {escape(str(output))}"
            f"  [{summary.shards_resumed} of {summary.shards} shards resumed, {len(summary.skipped)} skipped]"
        )
