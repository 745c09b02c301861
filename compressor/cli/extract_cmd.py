"""`chipq extract`: NIP / RNIP descriptors of images, from the chip model or the float model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from chipq.cli import app, err_console
from chipq.cli.options import flag, format_size, parse_size
from chipq.cli.progress import ProgressLog
from chipq.errors import UsageError
from chipq.formats import constants as C
from chipq.formats.errors import FormatError
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
        "are skipped with a warning and counted; when no image can be used nothing is written and the "
        "exit code is 2. The run is checkpointed in OUT.partial.npz every 100 images and every 30 s; "
        "an interrupted run resumes from it and gives the same file as an uninterrupted one. A "
        "checkpoint is resumed only by the same run: same blob or model (by content, SHA-256), same "
        "images (names and contents), same settings; otherwise it is refused.",
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
    input_size: Optional[str] = typer.Option(
        None, "--input", metavar="WxH", help="Network input size, width x height (default: the blob's input buffer, 224x224 for --model).", show_default=False
    ),
    old_size: Optional[str] = typer.Option(None, "--size", hidden=True, help="Deprecated name of --input."),
    batch: int = typer.Option(8, "--batch", min=1, help="Network inputs per executor call."),
    as_json: bool = flag("--json", help="Print the run summary as one JSON object."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, metavar="N", help="Run on Ray with N workers.", show_default=False),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="ADDR", help="An existing Ray cluster (with --workers).", show_default=False),
    shard_size: int = typer.Option(64, "--shard-size", min=1, metavar="N", help="Images per shard (with --workers)."),
    checkpoint_seconds: float = typer.Option(30.0, "--checkpoint-seconds", min=0, hidden=True, help="Seconds between checkpoints (tests)."),
) -> None:
    """Extract descriptors; see `_HELP`."""
    from chipq.executor.memory import check_fits, check_input_size
    from chipq.formats.fileio import check_output
    from chipq.images import image_names, list_images
    from chipq.retrieval.describe import NoImageUsable, describe_all, images_sha256, run_metadata
    from chipq.retrieval.descriptors import DescriptorKind, DescriptorStore, partial_path

    if (blob is None) == (model is None):
        raise UsageError("give exactly one of --blob BLOB or --model MODEL")
    if rnip is not None:
        rnip_levels(rnip)  # refuses anything but 5, 9, 14
    try:
        kind = DescriptorKind[descriptor.upper()]
    except KeyError:
        raise UsageError(f"--descriptor {descriptor!r}: choose float, byte or bit") from None
    if input_size is not None and old_size is not None:
        raise UsageError("--size is the old name of --input: give one of them")
    size_option = "--input" if old_size is None else "--size"
    size_text = input_size if input_size is not None else old_size
    requested_hw = parse_size(size_text, size_option) if size_text is not None else None
    if ray_address is not None and workers is None:
        raise UsageError("--ray-address needs --workers N")
    # Everything that can be refused is refused before the first image is described.
    check_output(output, "descriptor file", "--output")
    if workers is not None:
        from chipq.retrieval.distributed import require_ray

        require_ray()  # before any work: one line saying how to install it
        return _extract_on_ray(images, blob, model, output, rnip, kind, requested_hw, size_option, batch, as_json,
                               workers, ray_address, shard_size)
    check_output(partial_path(output), "checkpoint", "--output")
    paths = list_images(images)
    if not paths:
        raise UsageError(f"{images}: no JPEG or PNG image found")
    names = image_names(paths, images)
    loaded, layers, source, identity, default_size = _source(blob, model)
    input_hw = requested_hw or default_size
    what = f"{size_option} {format_size(input_hw)}" if requested_hw else str(blob)
    check_input_size(layers, input_hw, what)
    check_fits(layers, input_hw, batch, what)
    features = _features(loaded, batch)
    metadata = run_metadata(
        model=source, rnip=rnip, size=input_hw, **identity, images_sha256=images_sha256(names, paths)
    )
    store = DescriptorStore(output, names, kind=kind, metadata=metadata, checkpoint_seconds=checkpoint_seconds)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    # A bar in a terminal; plain progress lines (after 10 s, every 10 s or 5 %) in a pipe or a log.
    log = None if err_console.is_terminal or as_json else ProgressLog("extract", err_console)
    done = [store.resumed]

    def on_image(name: str) -> None:
        progress.advance(task)
        done[0] += 1
        if log:
            log.update("describing", done[0], len(names))

    try:
        with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as progress:
            task = progress.add_task("extracting", total=len(names), completed=store.resumed)
            summary = describe_all(
                list(zip(names, paths)), features, store, size=input_hw, rnip=rnip, batch_size=batch, on_image=on_image,
            )
    finally:
        if log:
            log.close()
    if summary.described + summary.resumed == 0:
        first = summary.skipped[0] if summary.skipped else ("", "")
        raise NoImageUsable(
            f"{images}: no image could be used ({len(names)} listed, {len(summary.skipped)} skipped; "
            f"first: {first[1]}); nothing written"
        )
    store.finish()
    for name, reason in summary.skipped:
        err_console.print(f"warning: skipped {escape(name)}: {escape(reason)}", highlight=False, soft_wrap=True)
    _report(output, names, summary, kind, rnip, input_hw, source, as_json, {}, f"{summary.resumed} resumed")


def _report(output, names, summary, kind, rnip, input_hw, source, as_json, extra: dict, resumed_text: str) -> None:
    """The run summary, the same keys for one process and for Ray (`extra`: Ray's own)."""
    result = {
        "output": str(output),
        "images": len(names),
        "described": summary.described,
        "resumed": summary.resumed,
        "skipped": len(summary.skipped),
        "descriptor": kind.name.lower(),
        "rnip": rnip,
        "input": format_size(input_hw),
        "source": source,
        **extra,
    }
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        Console(highlight=False).print(
            f"{summary.described + summary.resumed} descriptors ({kind.name.lower()}) → {escape(str(output))}"
            f"  [{resumed_text}, {len(summary.skipped)} skipped]"
        )


def _source(blob: Path | None, model: Path | None):
    """(chip model or float stack, its layers, source label, identity for resuming, default input (h, w))."""
    if blob is not None:
        from chipq.formats.reader import from_bytes, load_blob_bytes

        data = load_blob_bytes(blob)
        try:
            chip = from_bytes(data)
        except FormatError as exc:
            raise type(exc)(f"{blob}: {exc}") from None
        identity = {"blob_sha256": hashlib.sha256(data).hexdigest()}
        return chip, chip.layers, f"blob:{blob.name}", identity, (chip.input_height, chip.input_width)
    from chipq.importers import load_model

    stack = load_model(model).without_trailing_pool()
    return stack, stack.layers, f"model:{model.name}", {"model_sha256": stack.weights_sha256()}, C.CHIP_INPUT_HW


def _features(loaded, batch: int):
    from chipq.formats.model import ChipModel
    from chipq.retrieval.features import chip_features, float_features

    if isinstance(loaded, ChipModel):
        return chip_features(loaded, batch)
    return float_features(loaded, batch)


def _extract_on_ray(images, blob, model, output, rnip, kind, requested_hw, size_option, batch, as_json, workers, ray_address, shard_size):
    """`chipq extract --workers N`: the same file on Ray (`chipq.retrieval.distributed`)."""
    from chipq.executor.memory import check_fits, check_input_size
    from chipq.images import image_names, list_images
    from chipq.retrieval.describe import NoImageUsable, images_sha256, run_metadata
    from chipq.retrieval.distributed import Source, plan_distributed, run_distributed

    source = Source.from_file("blob" if blob is not None else "model", blob if blob is not None else model)
    # the same checks and the same metadata as a single-process run (a bad blob is refused here,
    # before a cluster starts), so the finished files are identical
    _, layers, label, identity, default_size = _source(blob, model)
    input_hw = requested_hw or default_size
    what = f"{size_option} {format_size(input_hw)}" if requested_hw else str(blob)
    check_input_size(layers, input_hw, what)
    check_fits(layers, input_hw, batch, what)
    paths = list_images(images)
    if not paths:
        raise UsageError(f"{images}: no JPEG or PNG image found")
    names = image_names(paths, images)
    metadata = run_metadata(model=label, rnip=rnip, size=input_hw, **identity, images_sha256=images_sha256(names, paths))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    plan = plan_distributed(  # refuses another run's shards before anything starts
        list(zip(names, paths)), output, source, kind=kind, rnip=rnip, size=input_hw, batch=batch,
        metadata=metadata, shard_size=shard_size,
    )
    already = sum(len(plan.slices[i]) for i in plan.done)
    # A bar in a terminal; plain progress lines in a pipe or a log, as a single-process run.
    log = None if err_console.is_terminal or as_json else ProgressLog("extract", err_console)
    done = [already]

    def on_shard(count: int, _shards: int) -> None:
        progress.advance(task, count)
        done[0] += count
        if log:
            log.update("describing", done[0], len(names))

    try:
        with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as progress:
            task = progress.add_task(f"extracting on Ray ({workers} workers)", total=len(names), completed=already)
            summary = run_distributed(plan, workers=workers, ray_address=ray_address, on_shard=on_shard)
    except NoImageUsable as exc:
        raise NoImageUsable(f"{images}: {exc}") from None
    finally:
        if log:
            log.close()
    for name, reason in summary.skipped:
        err_console.print(f"warning: skipped {escape(name)}: {escape(reason)}", highlight=False, soft_wrap=True)
    extra = {"workers": workers, "shards": summary.shards, "shards_resumed": summary.shards_resumed}
    _report(output, names, summary, kind, rnip, input_hw, label, as_json, extra,
            f"{summary.shards_resumed} of {summary.shards} shards resumed")  # fmt: skip
